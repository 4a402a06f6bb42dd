"""Prompt files written the way their sources write them (shapes of the public files)."""
# ruff: noqa: E501

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# Shaped like ShareGPT_V3_unfiltered_cleaned_split.json: one JSON array (FastChat's
# cleaning scripts write it with indent=2, ensure_ascii=False), ids `<key>_<part>`,
# human/gpt turns, a split part that starts with gpt, and empty conversations.
SHAREGPT = [
    {
        "id": "QWJhYvA_0",
        "conversations": [
            {
                "from": "human",
                "value": "Summarize the main ideas of Jeff Walker's Product Launch Formula.",
            },
            {
                "from": "gpt",
                "value": "Here are the main ideas of Jeff Walker's Product Launch Formula ...",
            },
            {
                "from": "human",
                "value": "Summarize the main ideas of Brendon Burchard's Experts Academy.",
            },
            {
                "from": "gpt",
                "value": "Here are the main ideas of Brendon Burchard's Experts Academy ...",
            },
        ],
    },
    {
        "id": "i6IyJda_0",
        "conversations": [
            {
                "from": "human",
                "value": "How to tell if a customer segment is well segmented? In 3 bullet points.",
            },
            {"from": "gpt", "value": "1. Homogeneity\n2. Distinctiveness\n3. Stability"},
        ],
    },
    {
        "id": "A5AbcES_0",
        "conversations": [
            {"from": "system", "value": "Answer in French."},
            {"from": "human", "value": "¿Qué hora es? 你好"},
        ],
    },
    {
        "id": "hRPPgZT_11",
        "conversations": [
            {"from": "gpt", "value": "(continued) ... and that is the last step."},
            {"from": "human", "value": "Thanks! Now write a haiku about it."},
            {"from": "gpt", "value": "Steps fall into place"},
        ],
    },
    {"id": "9nOtqpA_0", "conversations": []},
]
SHAREGPT_VALID = 4

# OpenAI's Batch API guide, "Preparing your batch file", as printed there.
OPENAI_BATCH = """\
{"custom_id": "request-1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-3.5-turbo-0125", "messages": [{"role": "system", "content": "You are a helpful assistant."},{"role": "user", "content": "Hello world!"}],"max_tokens": 1000}}
{"custom_id": "request-2", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-3.5-turbo-0125", "messages": [{"role": "system", "content": "You are an unhelpful assistant."},{"role": "user", "content": "Hello world!"}],"max_tokens": 1000}}
"""

# Shaped like stanford_alpaca's alpaca_data.json (utils.jdump: indent=4, ensure_ascii=False).
ALPACA = [
    {
        "instruction": "Give three tips for staying healthy.",
        "input": "",
        "output": "1.Eat a balanced diet and make sure to include plenty of fruits and vegetables.",
    },
    {
        "instruction": "Identify the odd one out.",
        "input": "Twitter, Instagram, Telegram",
        "output": "Telegram",
    },
    {
        "instruction": "Evaluate this sentence for spelling and grammar mistakes",
        "input": "He finnished his meal and left the resturant",
        "output": "He finished his meal and left the restaurant.",
    },
]

# Shaped like a Hugging Face dataset exported with `Dataset.to_csv` (pandas, no index):
# gsm8k-style question/answer columns, answers spanning lines.
GSM8K = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as "
        "many clips to her friends in May. How many clips did Natalia sell altogether?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
    },
    {
        "question": 'Weng earns $12 an hour for babysitting. Yesterday, she did 50 minutes of "babysitting". '
        "How much did she earn?",
        "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n#### 10",
    },
    {
        "question": "Betty is saving money for a new wallet which costs $100. How much more money "
        "does Betty need to buy the wallet?",
        "answer": "In the beginning, Betty has only 100 / 2 = $<<100/2=50>>50.\n#### 5",
    },
]


def write_sharegpt(path: Path) -> Path:
    path.write_text(json.dumps(SHAREGPT, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def write_openai_batch(path: Path) -> Path:
    path.write_text(OPENAI_BATCH, encoding="utf-8")
    return path


def write_alpaca(path: Path) -> Path:
    path.write_text(json.dumps(ALPACA, indent=4, ensure_ascii=False), encoding="utf-8")
    return path


def write_hf_csv(path: Path) -> Path:
    pd.DataFrame(GSM8K).to_csv(path, index=False)
    return path


def write_hf_parquet(path: Path) -> Path:
    """With an id column of its own name, as `Dataset.to_parquet` writes it."""
    rows = [{"qid": f"gsm8k-{i}", **row} for i, row in enumerate(GSM8K)]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_hf_json(path: Path) -> Path:
    """`Dataset.to_json` writes JSON lines, even into a `.json` file."""
    path.write_text("".join(json.dumps(row) + "\n" for row in GSM8K), encoding="utf-8")
    return path
