"""Quality benchmark: real LoRA adapters trained offline on real labelled text, merged with every
merge_core method, scored by what the merged encoder still knows (paper protocol: per-task heads
kept, used unchanged with the merged encoder). Run: python -m benchmarks.quality --help"""
