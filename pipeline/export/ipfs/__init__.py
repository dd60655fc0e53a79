"""IPFS: multiformats, dag-pb, UnixFS, CARv1 and a path/trustless gateway."""
