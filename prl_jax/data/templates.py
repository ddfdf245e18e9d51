"""Prompt templates: how a question becomes the text (or chat messages) the policy sees.

One template per convention, named by the paper whose setting it belongs to:

- `plain`        this codebase's synthetic tasks (arithmetic, countdown): short and
                 character-tokenizer friendly, "Q: 37+58-19+4\\nA: ".
- `qwen_math`    PRL/FRPO (arXiv 2601.10201), which trains Qwen2.5-Math-style models: the system
                 message "Please reason step by step, and put your final answer within \\boxed{}."
                 (the PRL code's prompt) and the bare question as the user message.
- `prime_eurus2` PRIME (arXiv 2502.01456), Eurus-2 chat style: a system message that lists
                 reasoning actions in square brackets and an instruction to box the final answer.
                 Eurus-2-RL-Data ships its own prompt messages, which `math_files.load_eurus2`
                 keeps as stored; this template gives the same style to other data. The wording
                 here is ours; for an exact reproduction use the prompts stored in the data set.
- `er_prm_gsm8k` ER-PRM (arXiv 2412.11006), GSM8K/MATH instruction-response style for the
                 MetaMath-like policies the paper samples from; answers end with "The answer is: N".
                 The wording here is ours.
- `arithmetic_chat` the synthetic arithmetic chains for instruct (chat) models, which need an
                 instruction rather than the bare "Q: ... A:" the small policies are trained on:
                 it asks for one operation at a time and a closing "The answer is N", the line
                 `arithmetic.check` reads (anywhere in free text). The wording here is ours.

Chat templates return a list of {"role", "content"} messages for the tokenizer's chat template;
text templates return a string to which the completion is appended directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Template:
  """A prompt convention. `user` holds the literal placeholder "{question}"."""

  name: str
  paper: str
  user: str
  system: str | None = None
  chat: bool = False

  def messages(self, question: str) -> Messages:
    """The prompt as chat messages (system first when there is one)."""
    # str.replace, not str.format: templates contain literal braces such as \boxed{}.
    content = self.user.replace("{question}", question)
    head = [{"role": "system", "content": self.system}] if self.system else []
    return head + [{"role": "user", "content": content}]

  def render(self, question: str) -> str | Messages:
    """Messages for chat templates, a single string for text templates."""
    if self.chat:
      return self.messages(question)
    text = self.user.replace("{question}", question)
    return f"{self.system}\n\n{text}" if self.system else text


PLAIN = Template(name="plain", paper="prl_jax synthetic tasks", user="Q: {question}\nA: ")

QWEN_MATH = Template(
  name="qwen_math",
  paper="PRL / FRPO (arXiv 2601.10201), Qwen2.5-Math chat convention",
  system="Please reason step by step, and put your final answer within \\boxed{}.",
  user="{question}",
  chat=True,
)

PRIME_EURUS2 = Template(
  name="prime_eurus2",
  paper="PRIME (arXiv 2502.01456), Eurus-2 style",
  system=(
    "Work through hard problems by choosing one action at a time and writing it as a tag at the "
    "start of the paragraph: [ASSESS] to understand the problem and what is asked, [ADVANCE] to "
    "compute or deduce something new, [VERIFY] to check earlier work for mistakes, [SIMPLIFY] "
    "to split a hard part into easier ones, [SYNTHESIZE] to combine partial results, [PIVOT] to "
    "change approach when the current one fails, and [OUTPUT] to state the final solution."
  ),
  user="{question}\n\nWrite the final answer in LaTeX as \\boxed{answer}.",
  chat=True,
)

ER_PRM_GSM8K = Template(
  name="er_prm_gsm8k",
  paper="ER-PRM (arXiv 2412.11006), GSM8K/MATH instruction style",
  user=(
    "The task below is a math problem. Solve it step by step, one step per line, and finish "
    "with a line of the form 'The answer is: N'.\n\n"
    "### Problem:\n{question}\n\n### Solution: Let's think step by step.\n"
  ),
)

ARITHMETIC_CHAT = Template(
  name="arithmetic_chat",
  paper="prl_jax synthetic arithmetic, instruction for chat models",
  user=(
    "Calculate {question}. Work it out one operation at a time, then finish with a line of "
    "the form 'The answer is N'."
  ),
  chat=True,
)

TEMPLATES: dict[str, Template] = {
  t.name: t for t in (PLAIN, QWEN_MATH, PRIME_EURUS2, ER_PRM_GSM8K, ARITHMETIC_CHAT)
}


def get_template(name: str) -> Template:
  """Look a template up by name; an unknown name lists the known ones."""
  try:
    return TEMPLATES[name]
  except KeyError:
    raise ValueError(f"unknown prompt template {name!r}; choose one of {sorted(TEMPLATES)}") from None


def render(name: str, question: str) -> str | Messages:
  """Shorthand for `get_template(name).render(question)`."""
  return get_template(name).render(question)


def prompt_text(tokenizer: Any, prompt: str | Messages) -> str:
  """The text a policy is fed for `prompt`: a string as is, chat messages through the tokenizer's
  chat template (with the assistant turn opened, so the response follows directly)."""
  if isinstance(prompt, str):
    return prompt
  if not getattr(tokenizer, "has_chat_template", False):
    raise ValueError(
      "The prompt is a list of chat messages (a chat template such as 'arithmetic_chat' or "
      "'qwen_math'), but the tokenizer has no chat template; use a tokenizer directory whose "
      "tokenizer_config.json has one, or a text template such as 'plain'."
    )
  return tokenizer.apply_chat_template(list(prompt))
