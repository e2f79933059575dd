"""Constitutional AI Workbench: the engine.

Everything a pipeline stage needs (store, constitution, backends, stages, evals) lives here;
the web app (`ui/`) and the CLI (`cai.cli`) are two thin faces over it. No Gradio imports here.
"""

__version__ = "0.1.0"
