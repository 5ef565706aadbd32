-- The sample backend's prompt library.
CREATE TABLE prompts (
    id serial PRIMARY KEY,
    title text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO prompts (title) VALUES
    ('Summarize a document'),
    ('Draft a release note'),
    ('Explain an error message');
