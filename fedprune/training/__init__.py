"""Local client training (masked SGD, FedProx), vectorised clients, evaluation."""
