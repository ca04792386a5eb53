"""Distances and travel times by the MDRP rule: ceil(euclidean distance / metres per minute)."""

from __future__ import annotations

import math

import numpy as np


def distance(x1: float, y1: float, x2: float, y2: float) -> float:
    return math.hypot(x1 - x2, y1 - y2)


def travel_minutes(distance_m: float, meters_per_minute: float, speed_factor: float = 1.0) -> int:
    """Whole minutes to cover a distance; speed_factor < 1 slows travel (rain)."""
    return math.ceil(distance_m / (meters_per_minute * speed_factor) - 1e-9)


def travel_matrix(
    ax: np.ndarray, ay: np.ndarray, bx: np.ndarray, by: np.ndarray, meters_per_minute: float, speed_factor=1.0
) -> np.ndarray:
    """Minutes from every point a to every point b (shape len(a) x len(b))."""
    d = np.hypot(ax[:, None] - bx[None, :], ay[:, None] - by[None, :])
    return np.ceil(d / (meters_per_minute * np.asarray(speed_factor)) - 1e-9)
