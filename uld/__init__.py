"""uld: a teaching and replication kit for the Universal Logit Distillation loss.

>>> from uld import uld_distance, ULDLoss, ULDOutput
"""

from uld.distance import uld_distance
from uld.loss import TokenKLLoss, ULDLoss, ULDOutput

__all__ = ["uld_distance", "ULDLoss", "ULDOutput", "TokenKLLoss"]
__version__ = "0.1.0"
