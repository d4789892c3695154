"""Terminal renderings of a pass run: the lines `compress quantize/export/prune/cluster/distill/qat/
binarize` print. The run and its report are data (``compress/runner.py``); this is only how they read.
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Callable, Mapping

from edgecompress.compress.runner import Evaluation, PassRun
from edgecompress.reports.tables import human_bytes


def render_run(run: PassRun, seconds: float) -> list[str]:
    """Every line but the title: the pass's own section, then accuracy and timing."""
    body = _RENDERERS.get(run.report.pass_name, _generic)(run)
    return [*body, f"  took          {seconds:.1f} s"]


def title(command: str, run: PassRun) -> str:
    return f"compress {command}: {run.source.path} → {run.output.path}"


# --------------------------------------------------------------------------- quantize and export


def _conversion(run: PassRun) -> list[str]:
    report = run.report
    params = report.params
    lines = []
    if report.pass_name == "quantize":
        granularity = "per-channel" if params["per_channel"] else "per-tensor"
        reason = next((n.removeprefix("mode: ") for n in run.notes if n.startswith("mode: ")), "")
        line = f"{params['mode']} ({params['format']}, {granularity}, {params['io']} I/O)"
        lines.append(f"  mode          {line}{f': {reason}' if reason else ''}")
        if report.calibration is not None:
            lines.append(f"  calibration   {report.calibration.samples} samples from {report.calibration.source}")
        if getattr(report, "int8_path", None):
            lines.append(f"  int8 path     {report.int8_path}")
    else:
        lines.append(f"  format        float {params['format']}")
    lines.append(f"  preprocessing {run.preprocessing.describe()} ({run.preprocessing_origin})")
    lines.append(f"  size          {run.sizes.describe(human_bytes)}")
    check = report.check
    lines.append(f"  export check  max |Δ| {check.max_abs_diff:.3g}, mean |Δ| {check.mean_abs_diff:.3g} on "
                 f"{check.samples} {check.inputs_from}: ok (tolerance {check.tolerance:.1%} of output scale)")  # fmt: skip
    lines += [f"  accuracy      {line}" for line in accuracy_lines(run.evaluation)]
    if report.pass_name == "quantize":
        from edgecompress.reports.inspect import fix_lines

        lines += fix_lines(report.to_dict())  # calibration method, weight fixes, layers kept in float
    return lines


def accuracy_lines(evaluation: Evaluation | None) -> list[str]:
    """Every metric of source and output, and the change in points."""
    if evaluation is None:
        return []
    source, output = evaluation.source.metrics, evaluation.output.metrics
    out = []
    for name in (k for k in source if k != "samples"):
        delta = (output[name] - source[name]) * 100
        out.append(f"{name} {source[name]:.2%} → {output[name]:.2%} ({delta:+.2f} points, {evaluation.samples} samples)")
    return out


# --------------------------------------------------------------------------- fine-tuning passes


def _fine_tuned(run: PassRun, body: Callable[[PassRun], list[str]]) -> list[str]:
    lines = body(run)
    lines.append(f"  size          {run.sizes.describe(human_bytes)}")
    ev = run.evaluation
    if ev is not None:
        src, out = ev.source.metrics[ev.metric], ev.output.metrics[ev.metric]
        lines.append(f"  {ev.metric:<13} {src:.2%} → {out:.2%} ({(out - src) * 100:+.2f} points, "
                     f"{ev.samples} held-out samples)")  # fmt: skip
    lines.append(f"  next          compress quantize {run.output.path} | compress export {run.output.path}")
    return lines


def _tflite_lines(tflite: Mapping | None, macs: bool) -> list[str]:
    if not tflite:
        return []
    src = tflite["source"]
    lines = []
    for key, label in (("output", "float TFLite"), ("output_sparse", "sparse TFLite")):
        if key not in tflite:
            continue
        out = tflite[key]
        lines.append(
            f"  {label:<13} {human_bytes(src.size_bytes)} → {human_bytes(out.size_bytes)}, gzip "
            f"{human_bytes(src.gzip_bytes)} → {human_bytes(out.gzip_bytes)} ({out.gzip_bytes / src.gzip_bytes:.2f}×)"
        )
        if macs and key == "output":
            lines.append(f"  MACs          {src.macs / 1e6:.2f} M → {out.macs / 1e6:.2f} M "
                         f"({1 - out.macs / src.macs:.1%} fewer)")  # fmt: skip
        if src.latency_ms_p50 and out.latency_ms_p50:
            lines.append(f"  LiteRT        {src.latency_ms_p50:.3f} ms → {out.latency_ms_p50:.3f} ms p50 "
                         f"({label}, 2 threads, batch 1)")  # fmt: skip
    return lines


def _prune(run: PassRun) -> list[str]:
    report, params = run.report, run.report.params
    if report.channels is not None:
        ch = report.channels
        lines = [
            f"  channels      {params['sparsity']:.0%} of each prunable group ({params['criterion']} ranking"
            f"{', distilled from the source' if params.get('distill') else ''}): "
            f"{ch.prunable_channels_before} → {ch.prunable_channels_after} channels in "
            f"{ch.groups_pruned} groups; {ch.groups_kept_whole} kept whole",
            f"  parameters    {ch.params_before:,} → {ch.params_after:,} ({1 - ch.params_after / ch.params_before:.1%} fewer)",
        ]
        for layer, why in list(ch.layers_without_channel_rule.items())[:5]:
            lines.append(f"  kept whole    around '{layer}' ({why})")
        return lines + _tflite_lines(report.tflite, macs=True)
    mag = report.magnitude
    lines = [f"  sparsity      {mag.measured_sparsity:.2%} of {mag.prunable_weights:,} prunable weights "
             f"({params['structure']}, {params['schedule']} schedule, target {params['sparsity']:.0%})"]  # fmt: skip
    if mag.two_four_exact is not None:
        lines.append(f"  2:4 pattern   {'exact in every pruned layer' if mag.two_four_exact else 'NOT exact'}")
    lines.append("  layer                              weights   sparsity")
    for row in mag.layers:
        lines.append(f"    {row.name[:32]:<32} {row.weights:>9,}   {row.sparsity:.1%}")
    for layer, why in mag.left_dense.items():
        lines.append(f"    {layer[:32]:<32} left dense: {why}")
    return lines + _tflite_lines(report.tflite, macs=False)


def _cluster(run: PassRun) -> list[str]:
    report = run.report
    lines = [f"  clusters      {report.params['clusters']} per kernel ({report.params['init']} init) in "
             f"{len(report.layers)} layers; at most {report.max_unique} distinct values per kernel"]  # fmt: skip
    for layer, why in report.left_unclustered.items():
        lines.append(f"    {layer[:32]:<32} left as is: {why}")
    return lines + _tflite_lines(report.tflite, macs=False)


def _distill(run: PassRun) -> list[str]:
    report = run.report
    params = report.params
    lines = [f"  student       {report.student} ({report.student_params:,} parameters; teacher "
             f"{report.teacher_params:,})",
             f"  KD            {report.kd_loss}, temperature {params['temperature']}, alpha {params['alpha']}, "
             f"{params['epochs']} epochs"]  # fmt: skip
    for name in ("teacher", "alone", "distilled"):
        if report.scores.get(name):
            lines.append(f"  {name:<13} {report.metric} {report.scores[name][report.metric]:.2%}")
    return lines


# --------------------------------------------------------------------------- QAT and binarization


def _scores(scores: Mapping[str, float], metric: str) -> str:
    keys = [metric] if metric in scores else [k for k in scores if k != "samples"][:2]
    return ", ".join(f"{k} {scores[k]:.2%}" if k != "nme" else f"{k} {scores[k]:.4f}" for k in keys)


def _qat(run: PassRun) -> list[str]:
    r = run.report
    params = r.params
    lines = [f"  training      {params['epochs']} epoch(s) on {r.training.samples} samples of {r.training.source}"
             f" (batch {params['batch_size']}, lr {params['lr']:g}, preserve {params['preserve']})"]  # fmt: skip
    if r.training.replicas > 1:
        lines[0] += f", {params.get('strategy', 'default')} over {r.training.replicas} replicas"
    if r.our_configs:
        counts = Counter(f"{v['layer']} {v['config']}" for v in r.our_configs.values())
        lines.append(f"  our configs   {len(r.our_configs)} layer(s) stock TFMOT rejects or mishandles: "
                     + ", ".join(f"{n}× {k}" for k, n in sorted(counts.items())))  # fmt: skip
    if r.flattened["inlined_models"] or r.flattened["rewritten_ops"]:
        lines.append(f"  flattened     {len(r.flattened['inlined_models'])} nested model(s) inlined, "
                     f"{len(r.flattened['rewritten_ops'])} TF op call(s) rewritten as layers")  # fmt: skip
    if r.inputs_reordered_by_tfmot:
        lines.append(f"  TFMOT fix     inputs of {', '.join(r.inputs_reordered_by_tfmot)} put back in the source's order")
    started_from = r.activation_ranges_initialised
    lines.append(f"  calibration   {r.calibration.samples} samples of the training data (converter ranges"
                 + (f", and the start of {started_from} QAT activation ranges)" if started_from else ")"))  # fmt: skip
    if r.weight_sparsity["source"] > 0.01:
        lines.append(f"  sparsity      {r.weight_sparsity['source']:.1%} in the source → "
                     f"{r.weight_sparsity['int8_tflite']:.1%} in the int8 file")  # fmt: skip
    ptq = f", post-training int8 {human_bytes(r.ptq_int8.size_bytes)}" if r.ptq_int8 else ""
    lines.append(f"  size          {run.sizes.describe(human_bytes)}{ptq}")
    lines.append(f"  export check  mean |Δ| {r.check.mean_abs_diff:.3g} vs the QAT Keras model on {r.check.samples} "
                 f"{r.check.inputs_from}: ok")  # fmt: skip
    ev = run.evaluation
    if ev is not None:
        lines.append(f"  accuracy on {ev.data}:")
        rows = [("float (Keras)", ev.source.metrics)]
        if r.ptq_int8 is not None:
            rows.append(("post-training int8 (LiteRT)", r.ptq_int8.metrics))
        rows.append(("QAT int8 (LiteRT)", ev.output.metrics))
        lines += [f"    {label:<28} {_scores(scores, ev.metric)}" for label, scores in rows]
    return lines


def _binarize(run: PassRun) -> list[str]:
    r = run.report
    macs = r.macs
    lines = [
        f"  binarized     {len(r.binarized_layers)} layer(s); float: {', '.join(r.float_layers) or 'none'}",
        f"  binary MACs   {macs['conv_binary_share']:.1%} of convolution MACs, {macs['binary_share']:.1%} of all "
        f"({macs['macs_binary']:,} binary, {macs['macs_float']:,} float per sample)",
        f"  distillation  {r.params['epochs']} epoch(s) on {r.training['samples']} samples, "
        f"loss {r.training['losses'][-1]:.3f}",
        f"  size          {human_bytes(run.source.size_bytes)} → {human_bytes(run.output.size_bytes)} "
        f"(LceBconv2d × {r.ops.get('LceBconv2d', 0)})",
        f"  LCE check     mean |Δ| {r.check.mean_abs_diff:.3g} ({r.check.relative:.2%} of the output range, tolerance "
        f"{r.check.tolerance:.0%}), top-1 agreement {r.top1_agreement:.0%} vs the Larq model",
    ]
    ev = run.evaluation
    if ev is not None:
        lines.append(f"  accuracy      float (Keras) top-1 {ev.source.metrics['top1']:.2%} → binarized (LCE) "
                     f"{ev.output.metrics['top1']:.2%} on {ev.data}")  # fmt: skip
    lines.append(f"  note          LCE's fast binary kernels are for 64-bit ARM; this is {platform.machine()}, "
                 "so `compress bench` latency here is not what a Raspberry Pi or phone sees")  # fmt: skip
    return lines


def _generic(run: PassRun) -> list[str]:
    lines = [f"  pass          {run.report.pass_name}"]
    return lines + [f"  accuracy      {line}" for line in accuracy_lines(run.evaluation)]


_RENDERERS: dict[str, Callable[[PassRun], list[str]]] = {
    "quantize": _conversion,
    "export": _conversion,
    "prune": lambda run: _fine_tuned(run, _prune),
    "cluster": lambda run: _fine_tuned(run, _cluster),
    "distill": lambda run: _fine_tuned(run, _distill),
    "qat": _qat,
    "binarize": _binarize,
}
