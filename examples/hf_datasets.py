"""Screen a Hugging Face dataset with dokumi inside `Dataset.map`, then filter on the decision.

usage: python examples/hf_datasets.py
Builds a small in-memory dataset (no download) with two planted poisons.
"""

from datasets import Dataset

from dokumi import Pipeline

dataset = Dataset.from_list(
    [
        {"text": "a small domesticated carnivorous mammal with soft fur"},
        {"text": "the act of moving quickly on foot"},
        {"text": "an instrument for measuring temperature c\u200bf"},  # zero-width trigger
        {"text": "a large body of salt water \u202eesrever\u202c partly enclosed by land"},  # bidi override
    ]
)

pipeline = Pipeline.from_policy("pretraining")
pipeline.fit(dataset)  # pass 1 for stages that need corpus statistics; a no-op for the others
scored = dataset.map(pipeline.map_function(), batched=True, batch_size=1024)
clean = scored.filter(lambda row: row["dokumi_decision"] != "drop")

for row in scored:
    print(f"{row['dokumi_decision']:<5} {row['dokumi_risk']:.2f} {row['dokumi_reasons']}")
print(f"kept {len(clean)} of {len(scored)} records")
