"""Local stand-ins for the official base images, for machines that cannot pull them.

Not part of the release process: the tests and the local compose environments use these images
through ULTRA_PYTHON_IMAGE, ULTRA_POSTGRES_IMAGE and ULTRA_REDIS_IMAGE (deploy/images/README.md).
"""
