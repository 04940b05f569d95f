"""The OCI runtime front end: ``pyctr``, runc's command line over pyctr's init (see
``cli``)."""
