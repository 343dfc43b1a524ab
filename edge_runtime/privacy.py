"""``--privacy``: keep no clip in which people can be heard talking.

The event is still reported; only its audio is not written. Judged on the AudioSet head's full
output (every speech label's probability, not a truncated top-k), over every 5 s window of the
clip with one whole-window backbone pass each (as :meth:`Detector.describe` does for tags).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

log = logging.getLogger("edge-detect")

SPEECH_LABELS = ("Speech", "Male speech, man speaking", "Female speech, woman speaking",
                 "Child speech, kid speaking", "Conversation", "Narration, monologue",
                 "Babbling", "Speech synthesizer", "Whispering")
SPEECH_THRESHOLD = 0.3  # AudioSet head probability of any speech label


class PrivacyError(ValueError):
    """The model cannot judge speech (no AudioSet head)."""


def speech_guard(detector, threshold: float = SPEECH_THRESHOLD
                 ) -> Callable[[np.ndarray], float]:
    """A function audio → the largest speech-label probability over the clip's windows."""
    from edge_runtime.features import embed_offline
    from edge_runtime.sessions import run1

    sessions = detector.sessions
    if sessions.head is None or not sessions.labels:
        raise PrivacyError(f"{sessions.model_dir}: --privacy needs a model with an AudioSet head "
                           "and labels (to hear speech)")
    index = [i for i, name in enumerate(sessions.labels) if name in SPEECH_LABELS]
    window = sessions.chunk_samples * sessions.window_chunks

    def speech(audio: np.ndarray) -> float:
        audio = np.asarray(audio, np.float32).reshape(-1)
        starts = range(0, max(1, audio.size - window // 2), window // 2)
        best = 0.0
        for s in starts:
            probs = run1(sessions.head, embed_offline(sessions, audio[s:s + window])[None])[0]
            best = max(best, float(probs[index].max()))
        return best

    return speech
