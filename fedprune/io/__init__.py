"""Bytes on the wire and at rest: the payload codec, the artifact store, what a round publishes, the files between Kubeflow steps, and the clients' state."""
