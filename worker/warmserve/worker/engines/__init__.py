"""Engines behind one interface (:mod:`.base`): ``fake`` (timing model), ``torch`` (real), ``vllm`` (GPU).

Each engine is its own module and is imported only when used, so a missing optional dependency (vLLM)
only matters to whoever asks for that engine.
"""
