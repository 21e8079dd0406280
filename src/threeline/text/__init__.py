"""Text: classifiers (an AWD-LSTM trained on your own texts, or a pretrained transformer) and
language models (word, BPE or character level).

    from threeline.text import TextData, text_classifier, language_model
    data = TextData.from_folder("imdb", valid_pct=0.1)
    learn = text_classifier(data, encoder="awd_lstm")       # or encoder="minilm"
    learn.fine_tune(4)
    learn.predict(["A masterpiece.", "Two hours I will never get back."])
"""

from threeline.text.data import TextData
from threeline.text.learner import TextLearner, language_model, rebuild, text_classifier

__all__ = ["TextData", "TextLearner", "language_model", "rebuild", "text_classifier"]
