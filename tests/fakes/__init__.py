"""Local stand-ins for the services the bot talks to: real servers on 127.0.0.1 that speak the
real protocols (``image_api``), and in-process fakes of our own interfaces (``provider``)."""
