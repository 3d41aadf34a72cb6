"""Secure aggregation (Bonawitz et al. 2017, "Practical Secure Aggregation for Privacy-Preserving
Machine Learning", CCS 2017), honest-but-curious server, with dropout recovery: the server
learns the sum of the surviving clients' input vectors and nothing else about any one of them.

`Client` and `Server` exchange bytes messages (`wire`), so the steps can run in separate
processes or travel through the artifact store; `secure_sum` runs a round in one process.
"""

from fedprune.privacy.secure.client import Client
from fedprune.privacy.secure.fixed_point import DEFAULT_BOUND, DEFAULT_FRAC_BITS, FixedPoint
from fedprune.privacy.secure.server import Server
from fedprune.privacy.secure.simulate import SERVER_STEPS, STEPS, SecureSumResult, secure_sum
from fedprune.privacy.secure.wire import ProtocolError

__all__ = [
    "DEFAULT_BOUND",
    "DEFAULT_FRAC_BITS",
    "SERVER_STEPS",
    "STEPS",
    "Client",
    "FixedPoint",
    "ProtocolError",
    "SecureSumResult",
    "Server",
    "secure_sum",
]
