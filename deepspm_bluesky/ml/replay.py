"""Replay buffer of conditioning transitions that stores each frame once.

A transition's next image is the next transition's image (within one environment), so the
buffer keeps frames in their own ring and transitions refer to them by serial number. Frames
are float16 (normalised images lie in [-1.5, 1.5]: 1e-3 resolution), optionally with the
features a frozen network trunk computed from them, so that learning never recomputes them.

Each transition adds at most two frames (its own and its next), so a frame ring of twice the
transition capacity never drops a frame a stored transition still needs. 15 000 transitions
of 64 x 64 images take at most 15 000 x 2 x 8 KiB = 246 MB (plus 23 MB of cached features);
the operating system lends the pages only as the ring fills, and a checkpoint holds only the
frames written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

FRAME_DTYPE = np.float16


@dataclass(frozen=True)
class Batch:
    """Sampled transitions as torch tensors (float32 frames or features)."""

    frames: torch.Tensor
    allowed: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_frames: torch.Tensor
    next_allowed: torch.Tensor
    done: torch.Tensor


class ReplayBuffer:
    """Ring buffer of transitions over a ring of frames stored once.

    Parameters
    ----------
    capacity
        Transitions kept; the oldest are overwritten.
    n_actions
        Length of the allowed masks.
    frame_shape
        Shape of one frame.
    feature_size
        Length of the cached feature vector per frame (0: none cached).

    Examples
    --------
    >>> buffer = ReplayBuffer(100, n_actions=3, frame_shape=(2, 2))
    >>> a = buffer.add_frame(np.zeros((2, 2)))
    >>> b = buffer.add_frame(np.ones((2, 2)))
    >>> buffer.add(a, np.ones(3, bool), 1, -1.0, b, np.ones(3, bool), False)
    >>> len(buffer), buffer.frames_stored
    (1, 2)
    """

    def __init__(self, capacity: int, *, n_actions: int, frame_shape: tuple[int, ...] = (64, 64),
                 feature_size: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.n_actions = int(capacity), int(n_actions)
        self.frame_shape, self.feature_size = tuple(frame_shape), int(feature_size)
        self.frame_capacity = 2 * self.capacity
        self._frames = np.zeros((self.frame_capacity, *self.frame_shape), FRAME_DTYPE)
        self._features = np.zeros((self.frame_capacity, self.feature_size), np.float32)
        self._frame_id = np.zeros((self.capacity, 2), np.int64)  # serials: frame, next frame
        self._allowed = np.zeros((self.capacity, 2, self.n_actions), bool)
        self._action = np.zeros(self.capacity, np.int64)
        self._reward = np.zeros(self.capacity, np.float32)
        self._done = np.zeros(self.capacity, bool)
        self.frames_written = 0  # serial of the next frame
        self.transitions_written = 0

    def __len__(self) -> int:
        return min(self.transitions_written, self.capacity)

    @property
    def frames_stored(self) -> int:
        """Frames held (each once, however many transitions refer to it)."""
        return min(self.frames_written, self.frame_capacity)

    @property
    def nbytes(self) -> int:
        """Memory of the arrays at full capacity."""
        arrays = (self._frames, self._features, self._frame_id, self._allowed, self._action,
                  self._reward, self._done)
        return sum(a.nbytes for a in arrays)

    def holds(self, frame_id: int) -> bool:
        """True while the frame with serial `frame_id` has not been overwritten."""
        return self.frames_written - self.frame_capacity <= frame_id < self.frames_written

    def add_frame(self, frame: np.ndarray, features: np.ndarray | None = None) -> int:
        """Store one frame (and its features); return its serial number."""
        frame = np.asarray(frame)
        if frame.shape != self.frame_shape:
            raise ValueError(f"frame of shape {frame.shape}, buffer holds {self.frame_shape}")
        slot = self.frames_written % self.frame_capacity
        self._frames[slot] = frame
        if self.feature_size:
            if features is None:
                raise ValueError("this buffer caches features: pass them with the frame")
            self._features[slot] = np.asarray(features, np.float32).reshape(self.feature_size)
        self.frames_written += 1
        return self.frames_written - 1

    def add(self, frame_id: int, allowed: np.ndarray, action: int, reward: float,
            next_frame_id: int, next_allowed: np.ndarray, done: bool) -> None:
        """Store one transition between two stored frames."""
        for serial in (frame_id, next_frame_id):
            if not self.holds(serial):
                raise ValueError(f"frame {serial} is not (or no longer) in the buffer")
        if not 0 <= action < self.n_actions:
            raise ValueError(f"action {action} outside 0..{self.n_actions - 1}")
        slot = self.transitions_written % self.capacity
        self._frame_id[slot] = frame_id, next_frame_id
        self._allowed[slot, 0], self._allowed[slot, 1] = allowed, next_allowed
        self._action[slot], self._reward[slot], self._done[slot] = action, reward, done
        self.transitions_written += 1

    def sample(self, batch_size: int, rng: np.random.Generator, *,
               features: bool = False) -> Batch:
        """`batch_size` transitions drawn uniformly (with replacement).

        With ``features=True`` the batch holds cached features instead of frames.
        """
        if not len(self):
            raise ValueError("the replay buffer is empty")
        index = rng.integers(0, len(self), batch_size)
        slots = self._frame_id[index] % self.frame_capacity
        source = self._features if features else self._frames

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array, np.float32))

        return Batch(
            frames=tensor(source[slots[:, 0]]),
            allowed=torch.from_numpy(self._allowed[index, 0]),
            actions=torch.from_numpy(self._action[index]),
            rewards=torch.from_numpy(self._reward[index]),
            next_frames=tensor(source[slots[:, 1]]),
            next_allowed=torch.from_numpy(self._allowed[index, 1]),
            done=torch.from_numpy(self._done[index]),
        )

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this buffer exactly: tensors and plain numbers only,
        so ``torch.load(..., weights_only=True)`` reads it."""
        n_frames, n = self.frames_stored, len(self)
        return {
            "capacity": self.capacity, "n_actions": self.n_actions,
            "frame_shape": list(self.frame_shape), "feature_size": self.feature_size,
            "frames_written": self.frames_written,
            "transitions_written": self.transitions_written,
            "frames": torch.from_numpy(self._frames[:n_frames].copy()),
            "features": torch.from_numpy(self._features[:n_frames].copy()),
            "frame_id": torch.from_numpy(self._frame_id[:n].copy()),
            "allowed": torch.from_numpy(self._allowed[:n].copy()),
            "action": torch.from_numpy(self._action[:n].copy()),
            "reward": torch.from_numpy(self._reward[:n].copy()),
            "done": torch.from_numpy(self._done[:n].copy()),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ReplayBuffer:
        """The buffer `state_dict` described (ValueError if it is inconsistent)."""
        try:
            buffer = cls(int(state["capacity"]), n_actions=int(state["n_actions"]),
                         frame_shape=tuple(state["frame_shape"]),
                         feature_size=int(state["feature_size"]))
            buffer.frames_written = int(state["frames_written"])
            buffer.transitions_written = int(state["transitions_written"])
            n_frames, n = buffer.frames_stored, len(buffer)
            buffer._frames[:n_frames] = state["frames"].numpy()
            buffer._features[:n_frames] = state["features"].numpy()
            buffer._frame_id[:n] = state["frame_id"].numpy()
            buffer._allowed[:n] = state["allowed"].numpy()
            buffer._action[:n] = state["action"].numpy()
            buffer._reward[:n] = state["reward"].numpy()
            buffer._done[:n] = state["done"].numpy()
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as error:
            raise ValueError(f"not a consistent replay-buffer state ({error})") from None
        return buffer

    def equals(self, other: ReplayBuffer) -> bool:
        """True if both hold the same transitions and frames (for tests and checks)."""
        a, b = self.state_dict(), other.state_dict()
        return a.keys() == b.keys() and all(
            torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
            for k in a)
