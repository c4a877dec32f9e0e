"""The original AIToolbox's ``aitoolbox.nlp`` (NLP models, dataset readers, vocabularies, QA and translation result
packages) is out of scope of aitoolbox 2: importing it says so and names the replacements."""

raise ImportError(
    "aitoolbox.nlp (the original AIToolbox's NLP models, SQuAD/QAngaroo readers, Vocabulary, QA and translation result "
    "packages, collate functions) is not part of aitoolbox 2. Keep it with pip install 'aitoolbox<2', or use Hugging "
    "Face transformers/datasets for models and data and HFEvaluateResultPackage (aitoolbox.experiment.result_package."
    "hf_evaluate_packages) for their metrics; see docs/migration.md, 'Not provided'"
)
