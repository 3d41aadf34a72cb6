"""What a federated task is made of: data sets, partitioners and models, each a registry."""
