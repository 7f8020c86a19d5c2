"""Local stand-ins for the services the bot talks to: real servers on 127.0.0.1 that speak the
real protocols (``discord``, ``slack``, ``image_api``, ``moderation_api``, all served by
``loopback``), the bot itself in a child process (``process``), and in-process fakes of our own
interfaces (``provider``, ``clock``, ``progress``). ``e2e`` keeps the first two kinds to tests
marked ``e2e``."""
