"""Task Arithmetic: ``ΔW = λ Σ_i w_i ΔW_i``, exact as a LoRA of rank Σr (the factors concatenated)."""

from merge_core.batch import BatchResult, ModuleBatch
from merge_core.registry import MethodParams, register


class TaskArithmeticParams(MethodParams):
    pass


@register("task_arithmetic", TaskArithmeticParams, factored=True, linear=True, summary="λ · Σ w_i ΔW_i; exact, rank Σr.")
def task_arithmetic(batch: ModuleBatch, params: TaskArithmeticParams) -> BatchResult:
    B, A = batch.concatenated()
    return BatchResult(B=B, A=A)
