"""AST (Audio Spectrogram Transformer, Gong et al. 2021) from `transformers`, as a frozen reprogramming backbone.

Weights: a hub id (default `MIT/ast-finetuned-audioset-10-10-0.4593`, the AudioSet checkpoint of the
reference, mAP 0.4593) or a local directory written by `save_pretrained`. The model is loaded as
`ASTForAudioClassification`, frozen and put in eval mode.

Pooling matches the reference (docs/methods.md §1.2): the embedding is the mean of the CLS and distillation
token outputs after the final LayerNorm — which is exactly `ASTModel`'s `pooler_output` in transformers —
and the logits are the checkpoint's own head (LayerNorm + Linear, 527 AudioSet classes) on that embedding.
Input: fbank [B, max_length, num_mel_bins] (1024 x 128) from `mirops.features.fbank.AstFbank`.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from mirops.features.fbank import AstFbank
from mirops.models.backbone_interface import Backbone

DEFAULT_AST = "MIT/ast-finetuned-audioset-10-10-0.4593"


class ASTBackbone(Backbone):
    """Frozen AST: fbank [B, T, F] -> (logits [B, num_labels], embedding [B, hidden_size]).

    `model` is a `transformers.ASTForAudioClassification`. `has_classifier=False` (a checkpoint without
    the classification head, e.g. a bare `ASTModel`) leaves no logits: `num_logits` is 0 and the logits are
    an empty [B, 0] tensor, so only an embedding-based output mapping can be used.
    """

    def __init__(self, model, has_classifier: bool = True, normalize: bool = False, peak_normalize: bool = True):
        super().__init__()
        config = model.config
        self.model = model
        self.has_classifier = has_classifier
        self.embedding_dim = config.hidden_size
        self.num_logits = config.num_labels if has_classifier else 0
        self.input_shape = (config.max_length, config.num_mel_bins)
        self.frontend = AstFbank(config.max_length, config.num_mel_bins, normalize=normalize,
                                 peak_normalize=peak_normalize)
        self.fill_value = self.frontend.fill_value
        self.freeze()

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path = DEFAULT_AST,
        *,
        normalize: bool = False,
        peak_normalize: bool = True,
        attn_implementation: str = "sdpa",
    ) -> ASTBackbone:
        """Load from a hub id or a `save_pretrained` directory; front-end switches as in `AstFbank`.

        `normalize=False, peak_normalize=True` is the reprogramming reference's preset; `normalize=True`
        feeds the AudioSet-normalised input AST was trained on.
        """
        from transformers import ASTForAudioClassification

        try:
            model, info = ASTForAudioClassification.from_pretrained(
                str(source), attn_implementation=attn_implementation, output_loading_info=True
            )
        except OSError as exc:
            raise OSError(
                f"could not load AST weights from {str(source)!r}: a hub id needs network access to the Hugging "
                "Face hub (or a copy in its cache); otherwise pass a local directory written by save_pretrained"
            ) from exc
        # A checkpoint without the classification head gets a random one: never use its logits.
        has_classifier = not any(key.startswith("classifier.") for key in info["missing_keys"])
        return cls(model, has_classifier, normalize=normalize, peak_normalize=peak_normalize)

    @property
    def label_names(self) -> list[str]:
        if not self.has_classifier:
            return []
        id2label = self.model.config.id2label
        return [id2label[i] for i in range(self.num_logits)]

    def _check(self, spec: Tensor) -> Tensor:
        if spec.dim() != 3 or tuple(spec.shape[1:]) != self.input_shape:
            raise ValueError(
                f"AST expects fbank frames [batch, {self.input_shape[0]}, {self.input_shape[1]}] "
                f"(its position embeddings are fixed), got {tuple(spec.shape)}"
            )
        return spec.to(self.model.dtype)

    def embed_spectrogram(self, spec: Tensor) -> Tensor:
        return self.model.audio_spectrogram_transformer(self._check(spec)).pooler_output

    def forward_spectrogram(self, spec: Tensor) -> tuple[Tensor, Tensor]:
        embedding = self.embed_spectrogram(spec)
        if not self.has_classifier:
            return embedding.new_zeros(embedding.shape[0], 0), embedding
        return self.model.classifier(embedding), embedding

