"""Part-of-speech-grouped masked language modelling ("POS-mask BERT").

Masked-language-model pre-training split into sub-tasks by the part of
speech of the masked word, for `MinimaxModel`: a grouper (words to groups,
offline), a keras-hub masked-LM preprocessor that gives every masked token
its group as a per-element task id, a real English corpus that ships with
the package, per-group held-out evaluation and label-free probing tasks.
Importing this package imports keras-hub (and so TensorFlow).
"""

from keras_taskrobust.nlp.bert import minilm_masked_lm
from keras_taskrobust.nlp.bert import minilm_preset
from keras_taskrobust.nlp.bert import pass_through_masked_lm_head
from keras_taskrobust.nlp.bert import python_docs_tokenizer
from keras_taskrobust.nlp.bert import tiny_bert_masked_lm
from keras_taskrobust.nlp.masked_lm_evaluation import masked_eval_set
from keras_taskrobust.nlp.masked_lm_evaluation import masked_lm_group_metrics
from keras_taskrobust.nlp.part_of_speech_grouper import DEFAULT_GROUPS
from keras_taskrobust.nlp.part_of_speech_grouper import PartOfSpeechGrouper
from keras_taskrobust.nlp.part_of_speech_grouper import load_lexicon
from keras_taskrobust.nlp.pos_masked_lm_preprocessor import NO_GROUP
from keras_taskrobust.nlp.pos_masked_lm_preprocessor import PosMaskedLMPreprocessor
from keras_taskrobust.nlp.probing_tasks import section_task
from keras_taskrobust.nlp.probing_tasks import word_order_task
from keras_taskrobust.nlp.python_docs import load_python_docs

__all__ = [
    "DEFAULT_GROUPS",
    "NO_GROUP",
    "PartOfSpeechGrouper",
    "PosMaskedLMPreprocessor",
    "load_lexicon",
    "load_python_docs",
    "masked_eval_set",
    "masked_lm_group_metrics",
    "minilm_masked_lm",
    "minilm_preset",
    "pass_through_masked_lm_head",
    "python_docs_tokenizer",
    "section_task",
    "tiny_bert_masked_lm",
    "word_order_task",
]
