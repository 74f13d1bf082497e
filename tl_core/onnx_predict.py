"""An exported ONNX model's log-probabilities with numpy alone, under Headstart's probability contract.

The contract: log_probs = log_softmax(logits); with the mirror image averaged in,
log_probs = logsumexp([log_probs, log_probs of the left-right flipped input]) - log 2; then
`tl_core.decision.calibrated_probabilities` and `decide`.

Nothing here imports torch or Headstart: the bundle's predict_onnx.py carries a copy of these functions
(`inspect.getsource`), and the export's parity check runs these same ones against PyTorch.
"""

from __future__ import annotations

import numpy as np


def model_input(square: np.ndarray, img_size: int, mean, std) -> np.ndarray:
    """A cached H x W x 3 uint8 square -> the 3 x img x img float32 input the model expects: the centre crop,
    normalised per channel as in training (`tl_core.preprocess.to_model_input`, float32 step for step)."""
    offset = (square.shape[0] - img_size) // 2
    crop = square[offset : offset + img_size, offset : offset + img_size]
    x = crop.astype(np.float32).transpose(2, 0, 1)
    mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1) * 255
    std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1) * 255
    return (x - mean) / std


def log_softmax(logits) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def onnx_log_probabilities(session, x: np.ndarray, mirror: bool = False) -> np.ndarray:
    """N x 3 x H x W float32 input -> N x C log-probabilities from an onnxruntime session whose graph outputs logits;
    with `mirror`, averaged (as probabilities) with those of the left-right mirror image."""
    name = session.get_inputs()[0].name
    log_probs = log_softmax(session.run(None, {name: x})[0])
    if mirror:
        flipped = np.ascontiguousarray(x[..., ::-1])
        log_probs = np.logaddexp(log_probs, log_softmax(session.run(None, {name: flipped})[0])) - np.log(2)
    return log_probs
