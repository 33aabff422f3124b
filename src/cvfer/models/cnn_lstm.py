"""CNN-LSTM on decoded RGB frames (the Mode-VLSTM family MIC compares with): a ResNet-18 per frame, an
LSTM over the frame features, a linear classifier on its last hidden state, cross-entropy. It is the
decoded-domain reference for accuracy and speed."""

from __future__ import annotations

from torch import Tensor, nn

from cvfer.models.backbones import ResNet18, encode_frames
from cvfer.models.base import FERModel, FEROutput
from cvfer.models.registry import register_model, variant_builder


class CNNLSTM(FERModel):
    """ResNet-18 frame encoder + single-layer LSTM + linear classifier; trained with the default CE loss.
    Frames are resized to `input_size` when given."""

    train_inputs = ("frames", "label")
    test_inputs = ("frames",)

    def __init__(
        self,
        num_classes: int = 7,
        image_size: int = 64,
        num_frames: int = 8,
        input_size: int | None = None,
        hidden_size: int = 512,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.image_size = image_size
        self.num_frames = num_frames
        self.input_size = input_size
        self.encoder = ResNet18()
        self.lstm = nn.LSTM(ResNet18.out_features, hidden_size, batch_first=True)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, num_classes))

    def forward(self, batch: dict[str, Tensor]) -> FEROutput:
        frames = batch["frames"]
        _, (hidden, _) = self.lstm(encode_frames(self.encoder, frames, self.input_size))
        features = hidden[-1]
        return FEROutput(self.classifier(features), features)


register_model("cnn-lstm")(variant_builder(CNNLSTM))
