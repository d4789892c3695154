"""Map converted graphs back to Keras layer names (TFLite tensors, ONNX nodes).

Why names: neither converter records which Keras layer an op came from (tensorflow#46073), but both
keep TensorFlow's name scopes, ``model/<layer>/<op>``; a fused op joins its parts with ``;``
(``model/Conv1_relu/Relu6;model/bn_Conv1/FusedBatchNormV3;model/Conv1/Conv2D``). Every Keras
layer named in such a string took part in the op, and the deepest of them (in the model's own
order) is the layer whose output the op produces.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from edgecompress.errors import UsageError

#: layers that only move values around: kept in float with the layer they read
SHAPE_ONLY = ("Reshape", "Flatten", "Permute")


class LayerMap:
    """The Keras layers of one model, in order, and which of them a graph name mentions."""

    def __init__(
        self, layer_names: Sequence[str], reshapes: dict[str, str] | None = None, outputs: Sequence[str] = ()
    ) -> None:
        self.names = list(layer_names)
        self.order = {name: i for i, name in enumerate(self.names)}
        #: shape-only layer → the one layer it reads (see ``kept_with_reshapes``)
        self.reshapes = dict(reshapes or {})
        #: the layers giving the model's outputs, in order (converters rename output tensors "Identity")
        self.outputs = [name for name in outputs if name in self.order]

    @classmethod
    def of(cls, model) -> LayerMap:
        from edgecompress.compress.kerasgraph import Wiring

        wiring = Wiring.of(model)
        reshapes = {
            layer.name: wiring.producers[layer.name][0] for layer in model.layers
            if type(layer).__name__ in SHAPE_ONLY and len(wiring.producers.get(layer.name, ())) == 1
        }  # fmt: skip
        outputs = [str(n) for n in getattr(model, "output_names", None) or []]
        return cls([layer.name for layer in model.layers], reshapes, outputs)

    def kept_with_reshapes(self, layers: Iterable[str]) -> list[str]:
        """Layers kept in float, plus the reshapes that only read them: a float output re-quantized
        by a Reshape after it (a landmark head's (N, 132) → (N, 33, 4)) would lose what was kept."""
        kept = list(dict.fromkeys(layers))
        grown = True
        while grown:
            grown = False
            for shaped, source in self.reshapes.items():
                if source in kept and shaped not in kept:
                    kept.append(shaped)
                    grown = True
        return kept

    def layers_in(self, graph_name: str) -> list[str]:
        """Keras layers named in a TFLite tensor or ONNX node/tensor name, in model order."""
        found = set()
        for piece in graph_name.split(";"):
            for part in piece.split("/"):
                token = part.split(":")[0]
                if token in self.order:
                    found.add(token)
        return sorted(found, key=self.order.__getitem__)

    def owner(self, graph_name: str) -> str | None:
        """The layer whose output the named op produces: the deepest one it mentions."""
        layers = self.layers_in(graph_name)
        return layers[-1] if layers else None

    def check(self, requested: Iterable[str], what: str = "--keep-float") -> tuple[str, ...]:
        """The requested names if every one is a layer; else one line naming the near matches."""
        requested = tuple(requested)
        for name in requested:
            if name not in self.order:
                near = difflib.get_close_matches(name, self.names, n=4, cutoff=0.5)
                hint = f"did you mean {', '.join(near)}?" if near else f"layer names look like {', '.join(self.names[1:4])}"
                raise UsageError(f"{what}: the model has no layer '{name}'", f"{hint} (`compress inspect` lists them)")
        return requested
