"""`python -m ultra_ops.sample_service`: run the sample Ultra AI backend until SIGTERM."""

from ultra_ops.sample_service.app import main

if __name__ == "__main__":
    raise SystemExit(main())
