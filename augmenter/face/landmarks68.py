"""Index constants for the 68 iBUG / dlib landmarks (0-based).

"Left"/"right" are as seen in the image (the image's left = the subject's right), matching dlib's numbering.
"""

from __future__ import annotations

JAW: tuple[int, ...] = tuple(range(0, 17))
CHIN: tuple[int, ...] = (7, 8, 9)
LEFT_BROW: tuple[int, ...] = tuple(range(17, 22))  # image-left brow, outer (17) → inner (21)
RIGHT_BROW: tuple[int, ...] = tuple(range(22, 27))  # image-right brow, inner (22) → outer (26)
NOSE_BRIDGE: tuple[int, ...] = tuple(range(27, 31))
NOSE_TIP: int = 30
NOSTRILS: tuple[int, ...] = tuple(range(31, 36))
LEFT_EYE: tuple[int, ...] = tuple(range(36, 42))  # 36 outer, 37-38 upper lid, 39 inner, 40-41 lower
RIGHT_EYE: tuple[int, ...] = tuple(range(42, 48))  # 42 inner, 43-44 upper lid, 45 outer, 46-47 lower
UPPER_LIDS: tuple[int, ...] = (37, 38, 43, 44)
LOWER_LIDS: tuple[int, ...] = (40, 41, 46, 47)
MOUTH_LEFT_CORNER: int = 48
MOUTH_RIGHT_CORNER: int = 54
MOUTH_CORNERS: tuple[int, ...] = (48, 54)
UPPER_LIP_OUTER: tuple[int, ...] = (49, 50, 51, 52, 53)
LOWER_LIP_OUTER: tuple[int, ...] = (55, 56, 57, 58, 59)
LOWER_LIP_CENTRE: tuple[int, ...] = (56, 57, 58)
INNER_LIPS: tuple[int, ...] = tuple(range(60, 68))
N_LANDMARKS = 68
