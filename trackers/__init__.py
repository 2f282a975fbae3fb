"""Multi-object trackers: numpy and scipy only, one state per instance."""

from .bytetrack import ByteTrackConfig, ByteTrackTracker, TrackerOutput
from .matching import iou_matrix

__all__ = ["ByteTrackConfig", "ByteTrackTracker", "TrackerOutput", "iou_matrix"]
