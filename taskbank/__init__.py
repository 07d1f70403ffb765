"""The bundled task bank: YAML specs in tasks/, example answers in examples/<task id>/."""

# The seed's practice set in its order, code tasks first: the task bank of the browser
# tests and the browser benchmark.
SEED_CODE_TASKS = (
    "finetune-load-pretrained",
    "finetune-freeze",
    "finetune-replace-head",
    "finetune-optimizer",
    "finetune-train-epoch",
)
SEED_QUESTIONS = (
    "quiz-finetune-purpose",
    "quiz-freeze-syntax",
    "quiz-requires-grad-sum",
    "quiz-no-improvement",
    "quiz-best-practice",
)
SEED_SET = SEED_CODE_TASKS + SEED_QUESTIONS
