"""Families "lstm", "transformer", "cnn_lstm": small PyTorch networks over windows of one symbol's rows.

Each row t is predicted from the `window` rows of its symbol ending at t (oldest first); rows with fewer
earlier rows are left-padded with the symbol's first row, so every row gets a prediction and none sees the
future. Features are standardised with the training mean/std; the regression target is standardised too
(MSE on a ~0.01-scale target trains poorly) and predictions are mapped back to log returns. Loss: MSE for
regression, BCE on logits for classification; Adam; seeds fixed, so CPU training is reproducible.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import torch
from torch import nn

from finstream.models.zoo.base import Forecaster, Task
from finstream.models.zoo.rows import SymbolRows, feature_matrix, feature_names_of
from finstream.models.zoo.storage import installed_version, read_meta, write_meta
from finstream.models.zoo.tabular import check_task, target_array

log = logging.getLogger(__name__)

_WEIGHTS_FILE = "network.pt"
_PREDICT_BATCH = 4096


def resolve_device(device: str) -> torch.device:
    """`auto` is cuda when available, else cpu; anything else is passed to torch as is."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _LSTMNet(nn.Module):
    def __init__(self, n_features: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            n_features, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(self.drop(out[:, -1])).squeeze(-1)


class _TransformerNet(nn.Module):
    def __init__(
        self, n_features: int, window: int, d_model: int, nhead: int, layers: int, ff: int, dropout: float
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(n_features, d_model)
        self.pos = nn.Parameter(torch.randn(1, window, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, nhead, ff, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(x) + self.pos)
        return self.head(h[:, -1]).squeeze(-1)


class _CNNLSTMNet(nn.Module):
    def __init__(self, n_features: int, channels: int, kernel: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(n_features, channels, kernel_size=kernel, padding=kernel // 2)
        self.lstm = nn.LSTM(channels, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the convolution mixes rows inside the window only, and the window ends at row t
        c = torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        out, _ = self.lstm(c)
        return self.head(self.drop(out[:, -1])).squeeze(-1)


class SequenceForecaster(Forecaster):
    """Shared windowing, training loop, inference and persistence; subclasses build the network."""

    sequential: ClassVar[bool] = True
    common: ClassVar[dict[str, Any]] = {
        "window": 20,
        "epochs": 8,
        "batch_size": 64,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "dropout": 0.1,
        "seed": 0,
        "device": "auto",
    }
    #: the family's own params, on top of `common`
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, task: Task, **params: Any) -> None:
        check_task(task)
        known = {**self.common, **self.defaults}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"{self.family} does not take {unknown}; its params are {sorted(known)}")
        super().__init__(task, **{**known, **params})
        if int(self.params["window"]) < 1 or int(self.params["epochs"]) < 0:
            raise ValueError("window must be >= 1 and epochs >= 0")
        self.device = resolve_device(str(self.params["device"]))
        self.net: nn.Module | None = None
        self.mean_ = np.zeros(0)
        self.std_ = np.ones(0)
        self.y_mean_ = 0.0
        self.y_std_ = 1.0

    @abstractmethod
    def _network(self, n_features: int) -> nn.Module:
        """A fresh network mapping (batch, window, n_features) to (batch,) raw outputs."""

    def _standardised(self, X: pd.DataFrame) -> np.ndarray:
        return ((feature_matrix(X, self.feature_names) - self.mean_) / self.std_).astype(np.float32)

    def fit(self, X: pd.DataFrame, y: pd.Series) -> Self:
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        p = self.params
        self.feature_names = feature_names_of(X)
        A = feature_matrix(X, self.feature_names)
        self.mean_ = A.mean(axis=0)
        std = A.std(axis=0)
        self.std_ = np.where(std > 0, std, 1.0)
        t = target_array(y, self.task).astype(np.float64)
        if self.task == "regression":
            self.y_mean_, self.y_std_ = float(t.mean()), float(t.std()) or 1.0
            t = (t - self.y_mean_) / self.y_std_
        windows = SymbolRows.of(X).windows(int(p["window"]))

        torch.manual_seed(int(p["seed"]))
        net = self._network(len(self.feature_names)).to(self.device)
        feats = torch.from_numpy(self._standardised(X)).to(self.device)
        idx = torch.from_numpy(windows).to(self.device)
        target = torch.from_numpy(t.astype(np.float32)).to(self.device)
        loss_fn: nn.Module = nn.MSELoss() if self.task == "regression" else nn.BCEWithLogitsLoss()
        opt = torch.optim.Adam(net.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"]))
        gen = torch.Generator().manual_seed(int(p["seed"]))
        batch = int(p["batch_size"])
        net.train()
        for epoch in range(int(p["epochs"])):
            order = torch.randperm(len(t), generator=gen).to(self.device)
            total = 0.0
            for lo in range(0, len(t), batch):
                rows = order[lo : lo + batch]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(feats[idx[rows]]), target[rows])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(rows)
            log.info(
                "%s (%s) epoch %d/%d loss %.5f",
                self.family,
                self.task,
                epoch + 1,
                p["epochs"],
                total / len(t),
            )
        self.net = net.eval()
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if self.net is None:
            raise RuntimeError(f"{self.family} model is not fitted: call fit() or load() first")
        Z = self._standardised(X)
        windows = SymbolRows.of(X).windows(int(self.params["window"]))
        out = np.empty(len(X), dtype=np.float64)
        with torch.inference_mode():
            for lo in range(0, len(X), _PREDICT_BATCH):
                xb = torch.from_numpy(Z[windows[lo : lo + _PREDICT_BATCH]]).to(self.device)
                raw = self.net(xb)
                raw = torch.sigmoid(raw) if self.task == "classification" else raw
                out[lo : lo + len(xb)] = raw.cpu().numpy()
        if self.task == "regression":
            out = out * self.y_std_ + self.y_mean_
        return out

    def save(self, path: Path) -> None:
        if self.net is None:
            raise RuntimeError(f"{self.family} model is not fitted: nothing to save")
        path = Path(path)
        libraries = {"torch": installed_version("torch"), "numpy": installed_version("numpy")}
        write_meta(
            path,
            self,
            libraries,
            mean=self.mean_,
            std=self.std_,
            y_mean=self.y_mean_,
            y_std=self.y_std_,
        )
        torch.save({k: v.cpu() for k, v in self.net.state_dict().items()}, path / _WEIGHTS_FILE)

    @classmethod
    def load(cls, path: Path) -> Self:
        path = Path(path)
        meta = read_meta(path, cls.family)
        model = cls(meta["task"], **meta["params"])
        model.feature_names = list(meta["feature_names"])
        model.mean_ = np.asarray(meta["mean"], dtype=np.float64)
        model.std_ = np.asarray(meta["std"], dtype=np.float64)
        model.y_mean_, model.y_std_ = float(meta["y_mean"]), float(meta["y_std"])
        net = model._network(len(model.feature_names))
        net.load_state_dict(torch.load(path / _WEIGHTS_FILE, map_location="cpu", weights_only=True))
        model.net = net.to(model.device).eval()
        return model


class LSTMForecaster(SequenceForecaster):
    """An LSTM (`hidden` units, `layers` layers) read out at the window's last row."""

    family: ClassVar[str] = "lstm"
    defaults: ClassVar[dict[str, Any]] = {"hidden": 32, "layers": 1}

    def _network(self, n_features: int) -> nn.Module:
        p = self.params
        return _LSTMNet(n_features, int(p["hidden"]), int(p["layers"]), float(p["dropout"]))


class TransformerForecaster(SequenceForecaster):
    """A small Transformer encoder (2 layers, d_model 32, 4 heads, learned positions) read at the last row."""

    family: ClassVar[str] = "transformer"
    defaults: ClassVar[dict[str, Any]] = {"d_model": 32, "nhead": 4, "layers": 2, "dim_feedforward": 64}

    def _network(self, n_features: int) -> nn.Module:
        p = self.params
        return _TransformerNet(
            n_features,
            int(p["window"]),
            int(p["d_model"]),
            int(p["nhead"]),
            int(p["layers"]),
            int(p["dim_feedforward"]),
            float(p["dropout"]),
        )


class CNNLSTMForecaster(SequenceForecaster):
    """Conv1d over the window (`channels`, `kernel`), then an LSTM read out at the last row."""

    family: ClassVar[str] = "cnn_lstm"
    defaults: ClassVar[dict[str, Any]] = {"channels": 32, "kernel": 3, "hidden": 32}

    def _network(self, n_features: int) -> nn.Module:
        p = self.params
        return _CNNLSTMNet(
            n_features, int(p["channels"]), int(p["kernel"]), int(p["hidden"]), float(p["dropout"])
        )
