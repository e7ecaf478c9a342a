"""The learned defect network (pure ``nn.Module``s): ``DefectNet`` built from a ``NetConfig``."""

from models.net.config import NetConfig
from models.net.model import DefectNet, DetectOutput

__all__ = ["DefectNet", "DetectOutput", "NetConfig"]
