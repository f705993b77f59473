"""In-process fakes of external services, for tests: real sockets on 127.0.0.1, documented behaviour."""
