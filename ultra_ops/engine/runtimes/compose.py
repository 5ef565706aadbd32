"""The compose runtime: `docker compose` (or Debian's `docker-compose`) for staging and production.

As in Kamal's lib/kamal/commands/, building a command and running it are kept apart: the
*_args methods are pure and return argument lists (tested as such), command_env() says what
they run with, and the Runtime methods run them through shell.run.

The image tag and registry reach the compose file through its environment, never through its
text: `image: ${ULTRA_REGISTRY:-}ultra-ai/backend:${ULTRA_IMAGE_TAG:-latest}`. Secrets reach it
through --env-file only.

An environment with a host (`[environments.X.host]`) runs the same commands on that host over SSH
(engine/hosts/ssh.py): the builders name the files' places on the host (`host.root`), the
variables of command_env() travel as `env K=V` in front of the remote command, and before each
command that changes the environment (up, pull, build, stop) the env file and compose file are
copied there, atomically, from this machine's, which stay the ones ultra_ops reads, backs up and
restores. Commands that only look (ps, config, logs) read what the host has.
"""

from __future__ import annotations

import functools
from pathlib import Path, PurePosixPath

from ultra_ops.engine import shell
from ultra_ops.engine.envfile import read_env_file
from ultra_ops.engine.errors import CommandFailed, RuntimeFailure
from ultra_ops.engine.files import private_dir
from ultra_ops.engine.health import answer, health_urls, wait_until_healthy
from ultra_ops.engine.hosts import files as host_files
from ultra_ops.engine.hosts import lock as host_lock
from ultra_ops.engine.hosts.names import as_configured
from ultra_ops.engine.hosts.ssh import HostEngineDown, RemoteCommandFailed, SshHost
from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.runtimes import DATA_SERVICES, ServiceStatus, compose_containers
from ultra_ops.engine.runtimes.service_env import env_file_wins
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment

httpx = lazy_module("httpx")

_POLL_S = 0.5
# Builds, pushes and pulls may legitimately take long; every command has a bound.
_SHORT_TIMEOUT_S = 120.0
_UP_TIMEOUT_S = 600.0
_BUILD_TIMEOUT_S = 3 * 3600.0


def registry_prefix(registry: str | None) -> str:
    """`registry.example.com` → `registry.example.com/`: the prefix an image name takes."""
    if not registry:
        return ""
    value = registry.strip()
    for scheme in ("https://", "http://"):
        value = value.removeprefix(scheme)
    value = value.rstrip("/")
    return f"{value}/" if value else ""


def log_volume(env: Environment) -> str:
    """The source of the backend's /app/logs mount: the environment's log_dir (a bind mount), or on
    an environment's own host its compose volume there, which archive-logs reaches through the host."""
    if env.host is not None:
        return env.host.logs_volume
    path = str(env.log_dir.absolute())
    if ":" in path or "," in path:
        # Compose's short volume syntax splits on ':'; such a folder would mount something else.
        raise RuntimeFailure(f"environment {env.name}: log_dir {path} cannot be mounted by compose (':' or ',')")
    return path


class ComposeRuntime:
    """Runtime for `runtime = "compose"` environments (or any environment given --compose FILE)."""

    def __init__(
        self,
        env: Environment,
        *,
        compose_file: Path | None = None,
        registry: str | None = None,
        log: Log | None = None,
        redact: Redactor | None = None,
    ) -> None:
        self.env = env
        file = compose_file or env.compose_file
        if file is None:
            raise RuntimeFailure(f"environment {env.name}: the compose runtime needs a compose file")
        self.compose_file = Path(file)
        self.project = env.compose_project or f"ultra-{env.name}"
        # Where images are pulled from and run as; push() names its own registry.
        self.registry = registry
        self.log = log or NullLog()
        self.redact = redact or Redactor.for_environment(env)
        self._version: str | None = None
        self.host = SshHost.for_environment(env, redact=self.redact) if env.host is not None else None
        self._uploaded: dict[PurePosixPath, str] = {}  # what this runtime last put on the host

    # -- where the files are: here, or on the environment's host ---------------------------------

    def host_path(self, local: Path) -> PurePosixPath:
        """Where a file of the environment lives on its host: in the host's root, by its name."""
        assert self.env.host is not None
        return self.env.host.root / local.name

    def _path(self, local: Path, here: bool = False) -> str:
        return str(self.host_path(local)) if self.host is not None and not here else str(local)

    # -- command builders: pure, no I/O ------------------------------------------------------

    def compose_base(self, here: bool = False) -> list[str]:
        """`compose -f FILE -p PROJECT --env-file FILE`: the files on the environment's host, or
        with `here` (and always without a host) this machine's."""
        return [
            *self.env.compose_command,
            "-f",
            self._path(self.compose_file, here),
            "-p",
            self.project,
            "--env-file",
            self._path(self.env.env_file, here),
        ]

    def command_env(
        self, version: str | None = None, registry: str | None = None, context: Path | None = None
    ) -> dict[str, str]:
        """The variables every compose command runs with; they override the caller's own."""
        values = {
            "ULTRA_IMAGE_TAG": version or "latest",
            "ULTRA_REGISTRY": registry_prefix(registry),
            "ULTRA_ENVIRONMENT": self.env.name,
            # The backend's /app/logs: what log rotation and archiving work on.
            "ULTRA_LOG_VOLUME": log_volume(self.env),
        }
        if context is not None:
            # The release's own source (its commit, checked out): what the image is built from.
            values["ULTRA_BUILD_CONTEXT"] = str(context)
        return values

    def build_args(self, version: str | None = None) -> list[str]:
        # The tag comes from command_env(version); the argument keeps the builders' signatures uniform.
        # --force-rm: a failed build step leaves no stopped container behind. Always here, from
        # the release's source on this machine: a host gets the image afterwards (deliver).
        return [*self.compose_base(here=True), "build", "--force-rm"]

    def push_args(self) -> list[str]:
        return [*self.compose_base(here=True), "push"]

    def pull_args(self) -> list[str]:
        return [*self.compose_base(), "pull"]

    def up_args(self) -> list[str]:
        return [*self.compose_base(), "up", "-d", "--remove-orphans"]

    def down_args(self) -> list[str]:
        return [*self.compose_base(), "down"]

    def stop_args(self, services: list[str]) -> list[str]:
        return [*self.compose_base(), "stop", *services]

    def ps_args(self) -> list[str]:
        return [*self.compose_base(), "ps"]

    def services_args(self, here: bool = False) -> list[str]:
        return [*self.config_args(here), "--services"]

    def logs_args(self, tail: int = 100) -> list[str]:
        return [*self.compose_base(), "logs", "--no-color", f"--tail={tail}"]

    def config_args(self, here: bool = False) -> list[str]:
        return [*self.compose_base(here), "config"]

    def remote_args(self, args: list[str], variables: dict[str, str]) -> list[str]:
        """A builder's command as run on the environment's host: ssh, then `env K=V ... args`."""
        assert self.host is not None
        return self.host.argv(args, variables)

    # -- execution ---------------------------------------------------------------------------

    def _run(
        self,
        args: list[str],
        *,
        version: str | None = None,
        registry: str | None = None,
        context: Path | None = None,
        timeout: float = _SHORT_TIMEOUT_S,
        changes: bool = False,
        here: bool = False,
    ) -> str:
        """Run a compose command; `changes`: it changes the environment, so on a host the env and
        compose files go there first; `here`: on this machine even for a hosted environment (build,
        push: the builders name this machine's files then)."""
        if not self.env.env_file.is_file():
            raise RuntimeFailure(f"environment {self.env.name}: env file {self.env.env_file} not found")
        # Compose's interpolation prefers the process environment over --env-file: it gets the
        # basics (to find docker and its config), the env file's value for a basic key it also
        # sets, and none of the variables the config names (service_env.py).
        variables = {
            **env_file_wins(read_env_file(self.env.env_file)),
            **self.command_env(version or self._version, registry or self.registry, context),
        }
        subcommand = args[len(self.compose_base())]
        if self.host is not None and not here:
            if changes:
                host_lock.checkpoint(self.env.name)  # never a change beside the lock's next holder
                self.upload_files()
            try:
                return self.host.run(args, remote_env=variables, timeout=timeout).stdout
            except HostEngineDown:
                raise  # the host's engine, not compose: said as such, and recover waits for it
            except RemoteCommandFailed as exc:
                message = f"compose {subcommand} ({self.project}) on {self.host.where} failed: {exc.reason}"
                raise RuntimeFailure(self.redact(message)) from None
        try:
            proc = shell.run(args, env=variables, cwd=self.compose_file.parent, timeout=timeout, redact=self.redact)
        except CommandFailed as exc:
            message = f"compose {subcommand} ({self.project}) failed: {exc}"
            raise RuntimeFailure(self.redact(message)) from None
        return proc.stdout

    def upload_files(self) -> None:
        """The env file and compose file onto the host (its root made if missing), each atomically;
        a file whose content this runtime already put there is not sent again."""
        assert self.host is not None and self.env.host is not None
        for local in (self.env.env_file, self.compose_file):
            remote = self.host_path(local)
            try:
                content = local.read_text(encoding="utf-8")
            except OSError as exc:
                raise RuntimeFailure(f"environment {self.env.name}: cannot read {local}: {exc.strerror}") from None
            if self._uploaded.get(remote) == content:
                continue
            if not self._uploaded:
                host_files.make_dirs(self.host, self.env.host.root)
            host_files.write_atomic(self.host, remote, content)
            self._uploaded[remote] = content

    def _files_on_host(self) -> bool:
        assert self.host is not None
        paths = [str(self.host_path(p)) for p in (self.env.env_file, self.compose_file)]
        return (
            self.host.run(
                ["test", "-f", paths[0], "-a", "-f", paths[1]], timeout=_SHORT_TIMEOUT_S, check=False
            ).returncode
            == 0
        )

    def build(self, version: str, context: Path | None = None) -> None:
        """Build the images at `version`; from `context` (the release's source) where given, else
        from the compose file's own build context."""
        self.log.info(f"compose build {self.project} at {version}" + (f" from {context}" if context else ""))
        self._run(
            self.build_args(version),
            version=version,
            context=context,
            timeout=_BUILD_TIMEOUT_S,
            changes=True,
            here=True,
        )

    def push(self, version: str, registry: str, context: Path | None = None) -> None:
        """Build with the registry in the image names (cached layers: this is the tag step), then push."""
        prefix = registry_prefix(registry)
        if not prefix:
            raise RuntimeFailure("push needs a registry")
        self.log.info(f"compose push {self.project} {version} to {prefix}")
        self._run(
            self.build_args(version),
            version=version,
            registry=registry,
            context=context,
            timeout=_BUILD_TIMEOUT_S,
            changes=True,
            here=True,
        )
        self._run(
            self.push_args(), version=version, registry=registry, timeout=_BUILD_TIMEOUT_S, changes=True, here=True
        )

    def built_images(self, version: str, registry: str | None = None) -> list[str]:
        """The images of the services the compose file builds (the backend), named as `up` runs
        them at `version`: what a host must get from here."""
        import yaml

        text = self._run(self.config_args(here=True), version=version, registry=registry, here=True)
        services = (yaml.safe_load(text) or {}).get("services") or {}
        return sorted(
            {str(s["image"]) for s in services.values() if isinstance(s, dict) and s.get("build") and s.get("image")}
        )

    def deliver(self, version: str, registry: str | None = None) -> list[str]:
        """Bring the built images at `version` to the environment's host (engine/hosts/images.py):
        pulled there from `registry` (else this runtime's), else streamed from here; nothing sent
        when the host has them. What was done, one line per image; [] without a host."""
        from ultra_ops.engine.hosts import images

        if self.host is None:
            return []
        registry = registry or self.registry
        done = []
        for image in self.built_images(version, registry):
            if registry_prefix(registry):
                outcome = images.pull_on_host(self.host, image, registry, log=self.log)  # type: ignore[arg-type]
            else:
                outcome = images.send_image(self.host, image, log=self.log)
            done.append(f"{image}: {outcome}")
        return done

    def pull(self, version: str) -> None:
        self.log.info(f"compose pull {self.project} {version}")
        self._run(self.pull_args(), version=version, timeout=_BUILD_TIMEOUT_S, changes=True)

    def up(self, version: str) -> None:
        self._version = version
        if self.host is not None:
            host_lock.checkpoint(self.env.name)  # before the strays' removal too: never beside the next holder
        try:
            self.remove_strays()  # what a killed restart left would make compose scale the service down
        except RuntimeFailure as exc:  # compose up below fails the same way, or leaves them to the next
            self.log.warning(str(exc))
        if self.host is None:
            # Made by us before dockerd would make the bind mount's source (as root, out of our reach).
            private_dir(self.env.log_dir)
        # On a host, its images first: compose would otherwise build a missing one there, from a
        # source the host does not have. A no-op when the host has them (a deploy's push step
        # delivered them; a rollback's release ran there before).
        self.deliver(version)
        self.log.info(f"compose up {self.project} at {version}")
        self._run(self.up_args(), version=version, timeout=_UP_TIMEOUT_S, changes=True)

    def configured_services(self) -> list[str]:
        """The services of this machine's compose file: the master copy, which the host gets before
        the command that acts on them (the host's may not be there yet, before a first start)."""
        return self._run(self.services_args(here=True), here=True).split()

    def up_stores(self) -> list[str]:
        """Start the stores alone (a new environment's database before its first deploy)."""
        services = [s for s in self.configured_services() if s in DATA_SERVICES]
        if services:
            self.log.info(f"compose up {self.project}: {', '.join(services)}")
            self._run([*self.compose_base(), "up", "-d", *services], timeout=_UP_TIMEOUT_S, changes=True)
        return services

    def containers(self) -> list[tuple[str, str, str]]:
        """The project's service containers, stopped ones included: (id, service, state), newest first."""
        return compose_containers.parse_containers(self.docker(compose_containers.containers_args(self.project)))

    def remove_strays(self) -> list[str]:
        """Remove the containers a restart killed midway left beside the services' own
        (compose_containers.strays): left there, they would show in `ps`, and a later `up -d` would
        scale the service down to one, not necessarily keeping the right one. Returns their ids."""
        removed = compose_containers.strays(self.containers())
        if removed:
            self.log.info(f"removing {len(removed)} container(s) an interrupted restart of {self.project} left")
            self.docker(["docker", "rm", "-f", *removed], changes=True)
        return removed

    def down(self) -> None:
        """Stop the application's services; the stores (DATA_SERVICES) keep running."""
        services = [s for s in self.configured_services() if s not in DATA_SERVICES]
        if not services:
            return
        self.log.info(f"compose stop {self.project}: {', '.join(services)}")
        self._run(self.stop_args(services), timeout=_UP_TIMEOUT_S, changes=True)

    def status(self, *, usage: bool = True) -> list[ServiceStatus]:
        """Each service: whether it runs and its container's state, health and image (`docker
        inspect`); with `usage`, memory and CPU too (`docker stats`, which samples for a second or
        two). The configured services are compose's answer; which containers are the project's is
        docker's (compose's labels): one compose process per status (compose 1.29's Python takes about
        0.3 s of CPU per run), where asking `ps` would start two more."""
        from ultra_ops.engine.runtimes import compose_status

        if self.host is not None and not self._files_on_host():
            return []  # never deployed to this host: no services there yet
        services = self._run(self.services_args()).split()
        rows = self.containers()
        running = {service for _, service, state in rows if state == "running"}
        ids = [cid for cid, _, _ in rows]
        containers, stats = {}, {}
        if ids:
            containers = compose_status.parse_inspect(self.docker(compose_status.inspect_args(ids)))
            # Only running containers: docker stats of a stopped one answers zeros, not "none".
            live = [c.name for c in containers.values() if c.state == "running"]
            if live and usage:
                stats = compose_status.parse_stats(self.docker(compose_status.stats_args(live)))
        return compose_status.describe(services, running, containers, stats, DATA_SERVICES)

    def docker(self, args: list[str], *, timeout: float = _SHORT_TIMEOUT_S, changes: bool = False) -> str:
        """A docker command (inspect, stats, start, stop) where the environment's engine is: on its
        host, or here. `changes`: it changes the environment (on a host, only while this run holds
        the lock there)."""
        try:
            if self.host is not None:
                if changes:
                    host_lock.checkpoint(self.env.name)
                return self.host.run(args, timeout=timeout).stdout
            return shell.run(args, environment=self.env, timeout=timeout, redact=self.redact).stdout
        except HostEngineDown:
            raise
        except RemoteCommandFailed as exc:
            message = f"{args[1]} of {self.project} on {exc.where} failed: {exc.reason}"
            raise RuntimeFailure(self.redact(message)) from None
        except CommandFailed as exc:
            raise RuntimeFailure(self.redact(f"{args[1]} of {self.project} failed: {exc}")) from None

    def container_ids(self) -> list[str]:
        """The project's running containers (for `docker stats`)."""
        return [cid for cid, _, state in self.containers() if state == "running"]

    def logs(self, tail: int = 100) -> str:
        return self.redact(self._run(self.logs_args(tail)))

    def config(self, version: str | None = None) -> str:
        """The resolved compose file, redacted (it may carry interpolated secrets)."""
        return self.redact(self._run(self.config_args(), version=version))

    def wait_healthy(self, timeout_s: float) -> None:
        urls = health_urls(self.env)
        if not urls:
            # Nothing to ask over HTTP: settle for every service running.
            def down() -> str | None:
                return ", ".join(s.name for s in self.status(usage=False) if not s.running) or None

            unhealthy = wait_until_healthy({"services": down}, timeout_s, poll_s=_POLL_S)
            if unhealthy is not None:
                raise RuntimeFailure(f"services {unhealthy[1]} of {self.project} not running after {timeout_s:g}s")
            return
        with httpx.Client(timeout=httpx.Timeout(3.0, connect=1.0), event_hooks=as_configured(self.env)) as client:
            probes = {url: functools.partial(answer, client, url) for url in urls}
            unhealthy = wait_until_healthy(
                probes, timeout_s, poll_s=_POLL_S, on_healthy=lambda url: self.log.info(f"{url} is healthy")
            )
        if unhealthy is not None:
            url, problem = unhealthy
            raise RuntimeFailure(self.redact(f"{self.project} not healthy after {timeout_s:g}s: {url}: {problem}"))
