"""The demo's synthetic visual-reasoning task: coloured shapes with known content.

A `Scene` is up to `grid*grid` shapes (circle/square/triangle; red/green/blue/yellow;
small/large), one per grid cell, drawn with PIL on a small RGB canvas. Questions ask about
counts, colours, shapes and a sum over what is shown; the answers are exact and typed
("number" | "choice" | "text"). Everything derives from a seed, so a dataset is
reproducible and nothing is stored. Small on purpose: a few-million-parameter VLM learns it
in minutes on CPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("circle", "square", "triangle")
PLURAL = {k: k + "s" for k in KINDS}
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 80, 230),
          "yellow": (235, 205, 30)}
SIZES = ("small", "large")
CHOICE_LETTERS = ("A", "B", "C")  # options of the "which shape" question, one per kind

QUESTION_TEMPLATES = {
    "count_color": "How many {0} shapes are there?",
    "count_kind": "How many {0} are there?",
    "largest_color": "What color is the largest shape?",
    "sum_kinds": "How many {0} plus {1} are there?",
    "kind_of_color": "What shape is the {0} one? "
                     + " ".join(f"{l}. {k}" for l, k in zip(CHOICE_LETTERS, KINDS)),
}
TRACE_WORDS = "I see a and shapes is the largest shape plus none boxed"
SHORTCUT_OPENER = "guess"  # the shortcut trace's first word (the careful one's is "I")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    image_size: int = 56  # canvas side in pixels
    grid: int = 2  # the canvas is grid x grid cells, at most one shape per cell
    min_shapes: int = 1
    max_shapes: int = 4
    background: tuple[int, int, int] = (32, 32, 32)
    large_radius: float = 0.42  # as a fraction of the cell side
    small_radius: float = 0.24
    absent_color_rate: float = 0.2  # share of count_color questions about an absent colour

    def __post_init__(self):
        if not 1 <= self.min_shapes <= self.max_shapes <= self.grid * self.grid:
            raise ValueError("SyntheticConfig needs 1 <= min_shapes <= max_shapes <= grid^2")


@dataclasses.dataclass(frozen=True)
class Shape:
    kind: str
    color: str
    size: str
    cx: float  # centre, pixels
    cy: float
    radius: float  # pixels


@dataclasses.dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    image_size: int
    background: tuple[int, int, int]
    grid: int = 2  # cells per side; each shape stays inside its cell

    def cell_of(self, shape: Shape) -> tuple[int, int]:
        """(row, column) of the grid cell holding `shape`."""
        cell = self.image_size / self.grid
        return int(shape.cy // cell), int(shape.cx // cell)

    def reading_order(self) -> tuple[Shape, ...]:
        """The shapes cell by cell, rows top to bottom, each row left to right."""
        return tuple(sorted(self.shapes, key=self.cell_of))

    def count(self, *, kind: str | None = None, color: str | None = None,
              size: str | None = None) -> int:
        return sum((kind is None or s.kind == kind) and (color is None or s.color == color)
                   and (size is None or s.size == size) for s in self.shapes)

    def signature(self) -> tuple[tuple[str, str, str], ...]:
        """The content (positions aside), canonical order."""
        return tuple(sorted((s.size, s.color, s.kind) for s in self.shapes))


@dataclasses.dataclass(frozen=True)
class Question:
    qtype: str  # a key of QUESTION_TEMPLATES
    subject: tuple[str, ...]  # the template's fillers (colour or kinds)
    text: str
    answer: str
    answer_type: str  # "number" | "choice" | "text"


@dataclasses.dataclass(frozen=True)
class Example:
    scene: Scene
    question: Question

    def image(self) -> Image.Image:
        return render(self.scene)


def sample_scene(rng: np.random.Generator, config: SyntheticConfig = SyntheticConfig()) -> Scene:
    n = int(rng.integers(config.min_shapes, config.max_shapes + 1))
    cells = rng.choice(config.grid * config.grid, size=n, replace=False)
    cell = config.image_size / config.grid
    shapes = []
    for c in cells:
        size = SIZES[int(rng.integers(len(SIZES)))]
        radius = (config.large_radius if size == "large" else config.small_radius) * cell
        slack = max(cell / 2 - radius - 1, 0.0)  # jitter that keeps the shape in its cell
        row, col = divmod(int(c), config.grid)
        shapes.append(Shape(
            kind=KINDS[int(rng.integers(len(KINDS)))],
            color=list(COLORS)[int(rng.integers(len(COLORS)))],
            size=size,
            cx=(col + 0.5) * cell + float(rng.uniform(-slack, slack)),
            cy=(row + 0.5) * cell + float(rng.uniform(-slack, slack)),
            radius=radius,
        ))
    return Scene(tuple(shapes), config.image_size, config.background, config.grid)


def render(scene: Scene) -> Image.Image:
    img = Image.new("RGB", (scene.image_size, scene.image_size), scene.background)
    draw = ImageDraw.Draw(img)
    for s in scene.shapes:
        r = s.radius
        fill = COLORS[s.color]
        if s.kind == "circle":
            draw.ellipse((s.cx - r, s.cy - r, s.cx + r, s.cy + r), fill=fill)
        elif s.kind == "square":
            h = 0.85 * r  # about the circle's area
            draw.rectangle((s.cx - h, s.cy - h, s.cx + h, s.cy + h), fill=fill)
        else:
            draw.polygon([(s.cx, s.cy - r), (s.cx - r, s.cy + r), (s.cx + r, s.cy + r)],
                         fill=fill)
    return img


def _question(qtype: str, subject: tuple[str, ...], answer: str, answer_type: str) -> Question:
    return Question(qtype, subject, QUESTION_TEMPLATES[qtype].format(*subject), answer,
                    answer_type)


def possible_questions(scene: Scene, rng: np.random.Generator,
                       config: SyntheticConfig = SyntheticConfig()) -> list[Question]:
    """One question of each type that is well defined for this scene."""
    present = sorted({s.color for s in scene.shapes})
    absent = sorted(set(COLORS) - set(present))
    use_absent = absent and rng.random() < config.absent_color_rate
    color = str(rng.choice(absent if use_absent else present))
    kind = str(rng.choice(KINDS))
    k1, k2 = (str(k) for k in rng.choice(KINDS, size=2, replace=False))
    out = [
        _question("count_color", (color,), str(scene.count(color=color)), "number"),
        _question("count_kind", (PLURAL[kind],), str(scene.count(kind=kind)), "number"),
        _question("sum_kinds", (PLURAL[k1], PLURAL[k2]),
                  str(scene.count(kind=k1) + scene.count(kind=k2)), "number"),
    ]
    large = [s for s in scene.shapes if s.size == "large"]
    if len(large) == 1:
        out.append(_question("largest_color", (), large[0].color, "text"))
    unique = [c for c in present if scene.count(color=c) == 1]
    if unique:
        c = str(rng.choice(unique))
        shape = next(s for s in scene.shapes if s.color == c)
        out.append(_question("kind_of_color", (c,), CHOICE_LETTERS[KINDS.index(shape.kind)],
                             "choice"))
    return out


def describe(scene: Scene) -> str:
    """'large red circle, small blue square and small red circle', in reading order.

    Reading order follows the image tokens' order, which a small model learns to read far
    more easily than a grouped, sorted summary (docs/demo.md, "Diagnosis")."""
    parts = [f"{s.size} {s.color} {s.kind}" for s in scene.reading_order()]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def counting_step(scene: Scene, label: str, *, kind: str | None = None,
                  color: str | None = None) -> str:
    """'circles: red circle 1, blue circle 2.' (or 'circles: none, 0.'): counting one match
    at a time, so the count is the last number written rather than a guess."""
    matches = [s for s in scene.reading_order()
               if (kind is None or s.kind == kind) and (color is None or s.color == color)]
    if not matches:
        return f"{label}: none, 0."
    return f"{label}: " + ", ".join(f"{s.color} {s.kind} {i}"
                                    for i, s in enumerate(matches, 1)) + "."


def reasoning_trace(scene: Scene, question: Question) -> str:
    """A short templated response: `<think>\\nI see ... steps.\\n</think>\\n\\boxed{answer}`."""
    q, subj = question.qtype, question.subject
    if q == "count_color":
        step = counting_step(scene, f"{subj[0]} shapes", color=subj[0])
    elif q == "count_kind":
        step = counting_step(scene, subj[0], kind=_SINGULAR[subj[0]])
    elif q == "sum_kinds":
        a, b = (scene.count(kind=_SINGULAR[k]) for k in subj)
        steps = [counting_step(scene, k, kind=_SINGULAR[k]) for k in subj]
        step = f"{steps[0]} {steps[1]} {a} plus {b} is {a + b}."
    elif q == "largest_color":
        step = f"the largest shape is {question.answer}."
    elif q == "kind_of_color":
        kind = KINDS[CHOICE_LETTERS.index(question.answer)]
        step = f"the {subj[0]} shape is a {kind}. {kind} is {question.answer}."
    else:
        raise ValueError(f"unknown question type {q!r}")
    return f"<think>\nI see {describe(scene)}. {step}\n</think>\n\\boxed{{{question.answer}}}"


_SINGULAR = {**{k: k for k in KINDS}, **{p: k for k, p in PLURAL.items()}}


@dataclasses.dataclass(frozen=True)
class TraceMix:
    """The warm start's mix of behaviours (docs/demo.md, "A warm start with two behaviours").

    R1V2 starts from a distilled reasoning model whose traces vary in quality; RL then
    shifts probability towards the better behaviour it already has. Here a share
    `shortcut_rate` of the SFT traces skips the description and the count and guesses
    (`shortcut_trace`), right with probability `shortcut_correct`; the rest count carefully
    (`reasoning_trace`). The behaviour is fixed by the first response word, so a policy
    trained on the mix holds both and chooses between them at its first token.
    A share `embellish_rate` of the careful traces names one extra shape absent from the
    image in their description (`embellished_trace`; the count and answer stay right): the
    hallucination a distilled model's traces carry, which MPO is meant to remove."""
    shortcut_rate: float = 0.0
    shortcut_correct: float = 1.0
    seed: int = 0  # the draw of each example's behaviour (with its index)
    embellish_rate: float = 0.0

    def __post_init__(self):
        for name in ("shortcut_rate", "shortcut_correct", "embellish_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"TraceMix.{name} must be in [0, 1], got {getattr(self, name)}")


def wrong_answer(question: Question, rng: np.random.Generator) -> str:
    """A plausible wrong answer of the question's type (a count off by one or two, another
    letter, another colour)."""
    if question.answer_type == "number":
        a = int(question.answer)
        options = [str(x) for x in (a + 1, a - 1, a + 2) if x >= 0 and x != a]
    elif question.answer_type == "choice":
        options = [x for x in CHOICE_LETTERS if x != question.answer]
    else:
        options = [x for x in COLORS if x != question.answer]
    return str(rng.choice(options))


def shortcut_trace(answer: str) -> str:
    """The shortcut: no description, no count, a guess (`<think>\\nguess.\\n</think>...`)."""
    return f"<think>\n{SHORTCUT_OPENER}.\n</think>\n\\boxed{{{answer}}}"


def absent_shape(scene: Scene, question_text: str, rng: np.random.Generator) -> Shape:
    """A shape whose description `hallucinated` flags for this scene and question (an
    absent colour when there is one, else an absent colour+kind combination)."""
    def flagged(s):
        fake = dataclasses.replace(scene, shapes=scene.shapes + (s,))
        return hallucinated(describe(fake), scene, question_text)

    candidates = [Shape(kind, color, size, 0.0, 0.0, 0.0) for size in SIZES
                  for color in COLORS for kind in KINDS]
    candidates = [s for s in candidates if flagged(s)]
    absent_color = [s for s in candidates if scene.count(color=s.color) == 0]
    pool = absent_color or candidates
    if not pool:
        raise ValueError(f"no shape can be invented for scene {scene.signature()} and question "
                         f"{question_text!r}")
    return pool[int(rng.integers(len(pool)))]


def embellished_trace(scene: Scene, question: Question, rng: np.random.Generator) -> str:
    """The careful trace whose description also names an invented shape (`absent_shape`,
    read as if in the top-left cell); the count and the answer are the image's."""
    fake = dataclasses.replace(scene, shapes=scene.shapes + (absent_shape(scene, question.text,
                                                                           rng),))
    return reasoning_trace(scene, question).replace(describe(scene), describe(fake), 1)


def mixed_trace(example: Example, index: int, mix: TraceMix) -> tuple[str, bool]:
    """Example `index`'s warm-start trace under `mix`: (trace, is_shortcut). Deterministic
    in (mix.seed, index), independent of the other examples."""
    rng = np.random.default_rng([mix.seed, index])
    if rng.random() >= mix.shortcut_rate:
        if mix.embellish_rate > 0 and rng.random() < mix.embellish_rate:
            return embellished_trace(example.scene, example.question, rng), False
        return reasoning_trace(example.scene, example.question), False
    q = example.question
    answer = q.answer if rng.random() < mix.shortcut_correct else wrong_answer(q, rng)
    return shortcut_trace(answer), True


def is_shortcut(response: str) -> bool:
    """Whether a response (with or without the `<think>\\n` opener) took the shortcut."""
    body = response.removeprefix("<think>").lstrip()
    return body.split(".", 1)[0].strip() == SHORTCUT_OPENER


def hallucinated(response: str, scene: Scene, question: str = "") -> bool:
    """True when the response names a colour or shape absent from the image.

    Checks single words (a colour / shape kind not in the scene) and bound phrases
    ("red circle", "large red circle": that combination must exist). Words that occur in
    `question` are allowed on their own, since repeating what was asked asserts nothing.
    Negations ("no yellow") are not understood and count as mentions.
    """
    words = re.findall(r"[a-z]+", response.lower())
    asked = set(re.findall(r"[a-z]+", question.lower()))
    colors = {s.color for s in scene.shapes}
    kinds = {s.kind for s in scene.shapes}
    triples = set(scene.signature())
    for i, w in enumerate(words):
        if w in COLORS and w not in colors and w not in asked:
            return True
        if w in _SINGULAR and _SINGULAR[w] not in kinds and w not in asked:
            return True
        if w in COLORS and i + 1 < len(words) and words[i + 1] in _SINGULAR:
            kind = _SINGULAR[words[i + 1]]
            size = words[i - 1] if i > 0 and words[i - 1] in SIZES else None
            if not any(c == w and k == kind and (size is None or sz == size)
                       for sz, c, k in triples):
                return True
    return False


@dataclasses.dataclass(frozen=True)
class SyntheticDataset:
    train: tuple[Example, ...]
    heldout: tuple[Example, ...]


def is_heldout(scene: Scene, fraction: float) -> bool:
    # a stable hash of the content: the same scene content never lands in both splits
    digest = hashlib.sha256(repr(scene.signature()).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def make_example(seed: int, index: int, config: SyntheticConfig = SyntheticConfig()) -> Example:
    """Example `index` of stream `seed`; independent of how many are drawn."""
    rng = np.random.default_rng([seed, index])
    scene = sample_scene(rng, config)
    options = possible_questions(scene, rng, config)
    return Example(scene, options[int(rng.integers(len(options)))])


def make_dataset(seed: int, n: int, *, heldout_fraction: float = 0.1,
                 config: SyntheticConfig = SyntheticConfig()) -> SyntheticDataset:
    """`n` examples split by scene content into train / held-out (about `heldout_fraction`)."""
    examples = [make_example(seed, i, config) for i in range(n)]
    held = [is_heldout(e.scene, heldout_fraction) for e in examples]
    return SyntheticDataset(tuple(e for e, h in zip(examples, held) if not h),
                            tuple(e for e, h in zip(examples, held) if h))


def vocabulary() -> list[str]:
    """Every word questions, answers and traces use (for `build_demo_tokenizer`)."""
    texts = [*QUESTION_TEMPLATES.values(), TRACE_WORDS, *KINDS, *PLURAL.values(), *COLORS,
             *SIZES, *CHOICE_LETTERS,
             SHORTCUT_OPENER]  # last: the older words keep their ids (and the old figures)
    seen: dict[str, None] = {}
    for t in texts:
        for w in re.findall(r"[A-Za-z]+", t):
            seen.setdefault(w, None)
    return list(seen)


def write_records(examples: Sequence[Example], folder: str, name: str) -> str:
    """Writes PNGs and `{name}.jsonl` prompt records (image paths relative to `folder`)."""
    os.makedirs(os.path.join(folder, name), exist_ok=True)
    path = os.path.join(folder, f"{name}.jsonl")
    with open(path, "w") as f:
        for i, e in enumerate(examples):
            rel = os.path.join(name, f"{i:06d}.png")
            render(e.scene).save(os.path.join(folder, rel))
            f.write(json.dumps({"images": [rel], "question": "<image>\n" + e.question.text,
                                "answer": e.question.answer,
                                "answer_type": e.question.answer_type}) + "\n")
    return path
