"""The client side: verify an environment against a snapshot, install from one, proxy an untrusted gateway."""
