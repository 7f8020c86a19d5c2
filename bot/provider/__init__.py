"""Image providers: the OpenAI-compatible client and its wire types, the offline preview
provider, the checks and re-encoding of images, the memory budget and JSON reading of
answers, the URL check for downloads, and the instrumentation behind ``/metrics``.

Nothing is re-exported here: import from the module that defines a name.
"""
