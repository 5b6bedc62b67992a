"""breedfilter: the command line and the local twin of the cloud stack (see README.md)."""
