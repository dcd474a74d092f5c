"""Camera-observation layout shared by rlkit's PyBullet sims (driving, navigation): one set of kwargs, one meaning.

``grayscale`` (one luma channel instead of RGB), ``frame_stack`` (the last k frames concatenated on the channel
axis, a rolling stack) and ``channels_first`` (``(C, H, W)``, what rlkit's CNN encoders take, instead of
``(H, W, C)``). The registered pixel ids (``rlkit/DrivingRGB-v0``, ``rlkit/NavigationRGB-v0``) pass
``channels_first=True``; the env classes default to ``(H, W, C)``.
"""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np

from rlkit.errors import RLKitError


def check_layout(image_size: int, frame_stack: int) -> None:
    """One-line errors for impossible camera knobs."""
    for name, value in (("image_size", image_size), ("frame_stack", frame_stack)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise RLKitError(f"{name} must be an integer >= 1; got {value!r}.")


class PixelLayout:
    """Turns RGB camera frames ``(H, W, 3)`` into observations of the chosen layout (keeps the frame stack)."""

    def __init__(self, image_size: int, grayscale: bool = False, frame_stack: int = 1,
                 channels_first: bool = False) -> None:
        check_layout(image_size, frame_stack)
        self.grayscale, self.frame_stack, self.channels_first = bool(grayscale), int(frame_stack), bool(channels_first)
        channels = (1 if self.grayscale else 3) * self.frame_stack
        size = int(image_size)
        shape = (channels, size, size) if self.channels_first else (size, size, channels)
        self.space = gym.spaces.Box(0, 255, shape, np.uint8)
        self._frames: deque[np.ndarray] = deque(maxlen=self.frame_stack)

    def _frame(self, rgb: np.ndarray) -> np.ndarray:
        if self.grayscale:  # ITU-R 601 luma in integer arithmetic
            wide = rgb.astype(np.uint16)
            frame = ((wide[:, :, 0] * 77 + wide[:, :, 1] * 150 + wide[:, :, 2] * 29) >> 8).astype(np.uint8)[:, :, None]
        else:
            frame = rgb[:, :, :3]
        return np.ascontiguousarray(frame.transpose(2, 0, 1) if self.channels_first else frame)

    def observe(self, rgb: np.ndarray, reset: bool = False) -> np.ndarray:
        """The observation after camera frame ``rgb``; ``reset=True`` fills the stack with it."""
        frame = self._frame(rgb)
        if self.frame_stack == 1:
            return frame
        if reset:
            self._frames.clear()
            self._frames.extend([frame] * self.frame_stack)
        else:
            self._frames.append(frame)
        return np.concatenate(self._frames, axis=0 if self.channels_first else 2)
