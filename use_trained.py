"""Answer questions with what run_qa.py or run_seq2seq_qa.py trained with --train_adapter: the base model with the
adapter and its head from --output_dir, and answers picked as the scripts pick them. Import it, or copy the lines.

    from transformers import AutoModelForQuestionAnswering
    from use_trained import load_trained_model, qa_pipeline

    model, tokenizer = load_trained_model("out", AutoModelForQuestionAnswering)  # run_qa.py ... --output_dir out
    answer = qa_pipeline(model, tokenizer, max_seq_length=384, doc_stride=128, max_answer_length=30)  # the run's
    answer(question="Where does Alice live?", context="Alice lives in Paris.")["answer"]

A merged model (--merge_adapter_on_save) needs no adapters library: pass AutoModelForQuestionAnswering.from_pretrained(
"out/merged") and AutoTokenizer.from_pretrained("out/merged") to qa_pipeline. docs/use-your-model.md says more.
"""
import json
import os

import torch
from transformers import AutoTokenizer, pipeline


def load_trained_model(output_dir, auto_class, adapter_name="squad", base_model=None):
    """(model, tokenizer): the base model with the adapter and its head from output_dir/adapter_name, active, in
    evaluation mode, and the tokenizer the run saved in output_dir. adapter_name: the folder the run wrote ("squad", or
    --dataset_name's last part; "mlm"/"clm" for the LM scripts). base_model: by default the model the adapter was
    trained on (its adapter_config.json says which), or output_dir itself for an LM trained from scratch."""
    import adapters  # only here: serving a merged model with qa_pipeline needs no adapters library

    folder = os.path.join(output_dir, adapter_name)
    with open(os.path.join(folder, "adapter_config.json"), encoding="utf-8") as f:
        trained_on = json.load(f).get("model_name")
    model = auto_class.from_pretrained(base_model or trained_on or output_dir)
    adapters.init(model)
    model.load_adapter(folder, set_active=True)  # with the head saved next to it (run_qa.py: qa_outputs)
    return model.eval(), AutoTokenizer.from_pretrained(output_dir)


def qa_pipeline(model, tokenizer, max_seq_length=384, doc_stride=128, max_answer_length=30, **pipeline_kwargs):
    """transformers' question-answering pipeline, set as run_qa.py was run (its --max_seq_length, --doc_stride and
    --max_answer_length; the scripts' defaults here) and answering with the context's characters under the best
    span's tokens, as run_qa.py does (the pipeline's default widens them to whole words). It then gives the answers of
    predict_predictions.json for contexts that fit in one window, when the run's --n_best_size covered the window
    (>= --max_seq_length; the pipeline searches every span). Longer contexts or SQuAD v2: see docs/use-your-model.md."""
    return pipeline("question-answering", model=model, tokenizer=tokenizer, align_to_words=False,
                    max_seq_len=max_seq_length, doc_stride=doc_stride, max_answer_len=max_answer_length,
                    **pipeline_kwargs)


def generate_answers(model, tokenizer, questions, contexts, max_seq_length=384, max_answer_length=30, num_beams=None):
    """run_seq2seq_qa.py's answers: the model reads "question: <q> context: <c>" (cut at max_seq_length tokens; the
    script splits a longer input into windows and keeps the best-scored answer) and writes the answer, at most
    max_answer_length tokens (the run's --val_max_answer_length or --generation_max_length), with the run's
    --num_beams (None: the model's generation config)."""
    texts = [" ".join(["question:", question.lstrip(), "context:", context.lstrip()])
             for question, context in zip(questions, contexts)]
    inputs = tokenizer(texts, max_length=max_seq_length, truncation=True, padding=True, return_tensors="pt")
    beams = {} if num_beams is None else {"num_beams": num_beams}
    with torch.no_grad():
        generated = model.generate(**inputs.to(model.device), max_length=max_answer_length, **beams)
    return tokenizer.batch_decode(generated, skip_special_tokens=True)
