"""Regenerate the demo data files in datasets_registry/data/ (deterministic: same output on every run).

    python datasets_registry/tools/make_demo_data.py

Hand-written text lives in demo_content.py; arithmetic, conversions and word tasks are computed here, so
every answer is right by construction.
"""

from __future__ import annotations

import json
import math
import random
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from demo_content import (  # noqa: E402
    ALPACA_HANDWRITTEN,
    ALPACA_WITH_HISTORY,
    ALPACA_WITH_SYSTEM,
    CONVERSATIONS,
    FOLLOW_UPS,
    PREFERENCE_HANDWRITTEN,
    PT_PARAGRAPHS,
)

DATA = HERE.parent / "data"
Row = dict[str, Any]

# (country, capital, continent sentence, another large city, note)
CAPITALS: list[tuple[str, str, str, str, str]] = [
    ("France", "Paris", "France is in Europe.", "Lyon", ""),
    ("Germany", "Berlin", "Germany is in Europe.", "Munich", ""),
    ("Italy", "Rome", "Italy is in Europe.", "Milan", ""),
    ("Spain", "Madrid", "Spain is in Europe.", "Barcelona", ""),
    ("Portugal", "Lisbon", "Portugal is in Europe.", "Porto", ""),
    ("Japan", "Tokyo", "Japan is in Asia.", "Osaka", ""),
    ("Canada", "Ottawa", "Canada is in North America.", "Toronto", "Toronto is larger, but Ottawa is the capital."),
    (
        "Australia",
        "Canberra",
        "Australia is in Oceania; the Australian mainland is itself a continent.",
        "Sydney",
        "Sydney is the largest city, but Canberra is the capital.",
    ),
    (
        "Brazil",
        "Brasília",
        "Brazil is in South America.",
        "Rio de Janeiro",
        "Brasília replaced Rio de Janeiro as the capital in 1960.",
    ),
    ("Argentina", "Buenos Aires", "Argentina is in South America.", "Córdoba", ""),
    ("Egypt", "Cairo", "Egypt is in Africa.", "Alexandria", ""),
    ("Kenya", "Nairobi", "Kenya is in Africa.", "Mombasa", ""),
    ("India", "New Delhi", "India is in Asia.", "Mumbai", ""),
    ("China", "Beijing", "China is in Asia.", "Shanghai", ""),
    ("Norway", "Oslo", "Norway is in Europe.", "Bergen", ""),
    ("Sweden", "Stockholm", "Sweden is in Europe.", "Gothenburg", ""),
    ("Finland", "Helsinki", "Finland is in Europe.", "Tampere", ""),
    ("Poland", "Warsaw", "Poland is in Europe.", "Kraków", ""),
    ("Greece", "Athens", "Greece is in Europe.", "Thessaloniki", ""),
    (
        "Turkey",
        "Ankara",
        "Turkey spans Europe and Asia, with most of its land in Asia.",
        "Istanbul",
        "Istanbul is the largest city, but Ankara is the capital.",
    ),
    ("Mexico", "Mexico City", "Mexico is in North America.", "Guadalajara", ""),
    ("Peru", "Lima", "Peru is in South America.", "Cusco", ""),
    ("Chile", "Santiago", "Chile is in South America.", "Valparaíso", ""),
    ("Ireland", "Dublin", "Ireland is in Europe.", "Cork", ""),
    ("Austria", "Vienna", "Austria is in Europe.", "Salzburg", ""),
    ("South Korea", "Seoul", "South Korea is in Asia.", "Busan", ""),
    ("Thailand", "Bangkok", "Thailand is in Asia.", "Chiang Mai", ""),
    ("Vietnam", "Hanoi", "Vietnam is in Asia.", "Ho Chi Minh City", ""),
    (
        "New Zealand",
        "Wellington",
        "New Zealand is in Oceania.",
        "Auckland",
        "Auckland is larger, but Wellington is the capital.",
    ),
    ("Morocco", "Rabat", "Morocco is in Africa.", "Casablanca", ""),
    ("Nigeria", "Abuja", "Nigeria is in Africa.", "Lagos", "Abuja replaced Lagos as the capital in 1991."),
    (
        "Switzerland",
        "Bern",
        "Switzerland is in Europe.",
        "Zurich",
        "Bern is officially the federal city, the seat of government.",
    ),
    (
        "the Netherlands",
        "Amsterdam",
        "The Netherlands is in Europe.",
        "Rotterdam",
        "The government and parliament, however, sit in The Hague.",
    ),
    ("Ghana", "Accra", "Ghana is in Africa.", "Kumasi", ""),
    ("Colombia", "Bogotá", "Colombia is in South America.", "Medellín", ""),
    ("Denmark", "Copenhagen", "Denmark is in Europe.", "Aarhus", ""),
    ("Hungary", "Budapest", "Hungary is in Europe.", "Debrecen", ""),
    ("the Czech Republic", "Prague", "The Czech Republic is in Europe.", "Brno", ""),
    ("the Philippines", "Manila", "The Philippines is in Asia.", "Cebu City", ""),
    ("Ethiopia", "Addis Ababa", "Ethiopia is in Africa.", "Dire Dawa", ""),
]

ANTONYMS = [
    ("hot", "cold"),
    ("ancient", "modern"),
    ("generous", "stingy"),
    ("brave", "cowardly"),
    ("empty", "full"),
    ("begin", "end"),
    ("increase", "decrease"),
    ("victory", "defeat"),
    ("rough", "smooth"),
    ("arrive", "depart"),
    ("accept", "refuse"),
    ("shallow", "deep"),
    ("noisy", "quiet"),
    ("rare", "common"),
    ("narrow", "wide"),
    ("temporary", "permanent"),
]

WORD_SETS = [
    ["banana", "apple", "cherry", "date"],
    ["river", "mountain", "desert", "forest", "valley"],
    ["violin", "drum", "flute", "guitar"],
    ["Tuesday", "Monday", "Sunday", "Friday"],
    ["zebra", "otter", "lynx", "badger", "heron"],
    ["copper", "iron", "gold", "silver", "tin"],
    ["maple", "birch", "oak", "cedar", "ash"],
    ["pencil", "eraser", "notebook", "ruler"],
    ["comet", "planet", "asteroid", "galaxy", "nebula"],
    ["salt", "pepper", "cumin", "basil", "thyme"],
    ["bridge", "tunnel", "harbour", "airport"],
    ["lemon", "grape", "mango", "kiwi", "plum", "fig"],
    ["sonnet", "ballad", "haiku", "limerick"],
    ["kettle", "toaster", "blender", "oven"],
    ["north", "south", "east", "west"],
]
VOWEL_WORDS = ["education", "rhythm", "banana", "encyclopedia", "strength", "audio", "mississippi", "queue"]
SENTENCES = [
    "The quick brown fox jumps over the lazy dog",
    "Rain fell softly on the old tin roof",
    "We planted tulips along the garden path",
    "Music makes long train journeys feel shorter",
    "Every good story needs a surprising ending",
    "The library opens early on Saturday mornings",
]
NUMBER_LISTS = [
    [12, 45, 7, 23, 38],
    [3, 91, 56, 14],
    [250, 125, 500, 375],
    [8, 15, 4, 16, 23, 42],
    [67, 12, 89, 34, 56],
    [101, 99, 110, 95],
]

NAMES = [
    ("Ava", "she"),
    ("Ben", "he"),
    ("Chloe", "she"),
    ("Diego", "he"),
    ("Emma", "she"),
    ("Farid", "he"),
    ("Grace", "she"),
    ("Hiro", "he"),
    ("Isla", "she"),
    ("Jonas", "he"),
    ("Kemi", "she"),
    ("Liam", "he"),
    ("Maya", "she"),
    ("Noah", "he"),
    ("Olga", "she"),
    ("Priya", "she"),
    ("Rosa", "she"),
    ("Sam", "he"),
    ("Tara", "she"),
    ("Umar", "he"),
    ("Vera", "she"),
    ("Wen", "she"),
    ("Yusuf", "he"),
    ("Zoe", "she"),
]
ITEMS = ["marbles", "stickers", "apples", "pencils", "cookies", "stamps", "shells", "cards", "beads", "books"]
LAZY = ["I don't know.", "You can find that online.", "Not sure, sorry.", "That would take too long to explain."]
RUDE = [
    "That's an obvious question. Figure it out yourself.",
    "Why would you even ask that?",
    "Ugh. Just search for it.",
]
VAGUE = ["It depends on a lot of things.", "There are many ways to look at it.", "Some say one thing, some another."]


def _pron(pronoun: str) -> dict[str, str]:
    if pronoun == "she":
        return {"p": "she", "P": "She", "obj": "her", "poss": "her", "Poss": "Her"}
    return {"p": "he", "P": "He", "obj": "him", "poss": "his", "Poss": "His"}


def _num(value: float) -> str:
    """A number as people write it: integers without .0, others with up to two decimals."""
    if abs(value - round(value)) < 1e-9:
        return f"{round(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _factorize(n: int) -> list[int]:
    factors, d = [], 2
    while d * d <= n:
        while n % d == 0:
            factors.append(d)
            n //= d
        d += 1
    if n > 1:
        factors.append(n)
    return factors


def _roman(n: int) -> str:
    table = [(1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"), (50, "L")]
    table += [(40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")]
    out = ""
    for value, letters in table:
        while n >= value:
            out += letters
            n -= value
    return out


def _join(words: list[str]) -> str:
    return ", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else words[0]


# --------------------------------------------------------------------------------------------- alpaca (sft)


def capital_answer(country: str, capital: str, note: str) -> str:
    text = f"The capital of {country} is {capital}."
    return f"{text} {note}" if note else text


def conversions() -> list[tuple[str, str]]:
    out = []
    for km in (5, 10, 21, 42, 100):
        out.append(
            (
                f"Convert {km} kilometres to miles.",
                f"{km} kilometres is about {km * 0.621371:.2f} miles, since 1 kilometre is roughly 0.6214 miles.",
            )
        )
    for c in (-10, 0, 15, 25, 37, 100):
        f = c * 9 / 5 + 32
        out.append(
            (
                f"What is {c} degrees Celsius in Fahrenheit?",
                f"{c} °C is {_num(f)} °F. Multiply by 9/5 and add 32: {c} × 9/5 + 32 = {_num(f)}.",
            )
        )
    for f in (50, 68, 86, 104):
        c = (f - 32) * 5 / 9
        out.append(
            (
                f"Convert {f} degrees Fahrenheit to Celsius.",
                f"{f} °F is {_num(c)} °C. Subtract 32 and multiply by 5/9: ({f} - 32) × 5/9 = {_num(c)}.",
            )
        )
    for kg in (3, 12, 70):
        out.append((f"How many pounds is {kg} kilograms?", f"{kg} kg is about {kg * 2.20462:.1f} pounds."))
    for inch in (6, 12, 30):
        out.append(
            (f"Convert {inch} inches to centimetres.", f"{inch} inches is {_num(inch * 2.54)} cm (1 inch = 2.54 cm).")
        )
    for h in (3, 7.5):
        out.append(
            (f"How many minutes are in {_num(h)} hours?", f"There are {_num(h * 60)} minutes in {_num(h)} hours.")
        )
    return out


def arithmetic(rng: random.Random) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    for p, n in ((15, 80), (25, 64), (40, 250), (12, 50), (75, 120)):
        value = p * n / 100
        out.append(
            (f"What is {p}% of {n}?", "", f"{p}% of {n} is {_num(value)}, because {p / 100:g} × {n} = {_num(value)}.")
        )
    for numbers in ([4, 8, 15, 21], [10, 20, 30, 40, 50], [7, 9, 14], [3, 5, 6, 10, 11]):
        mean = sum(numbers) / len(numbers)
        out.append(
            (
                "Find the average of these numbers.",
                ", ".join(map(str, numbers)),
                f"The sum is {sum(numbers)} and there are {len(numbers)} numbers, so the average is "
                f"{sum(numbers)} / {len(numbers)} = {_num(mean)}.",
            )
        )
    for a, b in ((12, 7), (9, 15), (25, 4)):
        out.append(
            (
                f"A rectangle is {a} metres long and {b} metres wide. What is its area?",
                "",
                f"The area is {a} × {b} = {a * b} square metres.",
            )
        )
    for a, b in ((17, 24), (36, 48), (125, 8)):
        out.append((f"What is {a} × {b}?", "", f"{a} × {b} = {a * b}."))
    for a, b in ((1234, 5678), (909, 191)):
        out.append((f"Add {a} and {b}.", "", f"{a} + {b} = {a + b}."))
    for principal, rate, years in ((1000, 5, 3), (2500, 4, 2), (800, 10, 5)):
        interest = principal * rate * years / 100
        out.append(
            (
                f"How much simple interest does ${principal} earn at {rate}% per year over {years} years?",
                "",
                f"Simple interest = principal × rate × time = {principal} × {rate / 100:g} × {years} = "
                f"${_num(interest)}.",
            )
        )
    rng.shuffle(out)
    return out


def word_tasks() -> list[tuple[str, str, str]]:
    out = []
    for words in WORD_SETS[:6]:
        ordered = sorted(words, key=str.lower)
        out.append(("Sort these words alphabetically.", ", ".join(words), ", ".join(ordered)))
    for word in VOWEL_WORDS[:5]:
        vowels = [ch for ch in word if ch in "aeiou"]
        if vowels:
            answer = f"The word '{word}' has {len(vowels)} vowels: {', '.join(vowels)}."
        else:
            answer = f"The word '{word}' has no vowels among a, e, i, o and u (the 'y' acts as a vowel sound)."
        out.append(("Count the vowels (a, e, i, o, u) in the following word.", word, answer))
    for sentence in SENTENCES[:4]:
        out.append(("Reverse the order of the words in this sentence.", sentence, " ".join(reversed(sentence.split()))))
    for sentence in SENTENCES[4:]:
        out.append(("Convert the following text to uppercase.", sentence, sentence.upper()))
        out.append(
            ("How many words are in this sentence?", sentence, f"The sentence has {len(sentence.split())} words.")
        )
    for numbers in NUMBER_LISTS[:3]:
        out.append(
            (
                "Find the largest number in this list.",
                ", ".join(map(str, numbers)),
                f"The largest number is {max(numbers)}.",
            )
        )
    for numbers in NUMBER_LISTS[3:5]:
        out.append(("Add up the numbers in this list.", ", ".join(map(str, numbers)), f"The total is {sum(numbers)}."))
    for numbers in NUMBER_LISTS[5:] + NUMBER_LISTS[:1]:
        out.append(
            (
                "Sort these numbers from smallest to largest.",
                ", ".join(map(str, numbers)),
                ", ".join(map(str, sorted(numbers))),
            )
        )
    return out


def alpaca_rows(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    for instruction, inp, output in ALPACA_HANDWRITTEN:
        rows.append({"instruction": instruction, "input": inp, "output": output})
    for system, instruction, output in ALPACA_WITH_SYSTEM:
        rows.append({"instruction": instruction, "input": "", "output": output, "system": system})
    for history, instruction, output in ALPACA_WITH_HISTORY:
        rows.append({"instruction": instruction, "input": "", "output": output, "history": history})
    phrasings = ["What is the capital of {c}?", "Name the capital city of {c}.", "Which city is the capital of {c}?"]
    for i, (country, capital, _, _, note) in enumerate(CAPITALS[:25]):
        question = phrasings[i % len(phrasings)].format(c=country)
        rows.append({"instruction": question, "input": "", "output": capital_answer(country, capital, note)})
    for question, answer in conversions():
        rows.append({"instruction": question, "input": "", "output": answer})
    for instruction, inp, output in arithmetic(rng):
        rows.append({"instruction": instruction, "input": inp, "output": output})
    for instruction, inp, output in word_tasks():
        rows.append({"instruction": instruction, "input": inp, "output": output})
    for word, opposite in ANTONYMS[:14]:
        rows.append(
            {
                "instruction": f"Give an antonym for the word '{word}'.",
                "input": "",
                "output": f"An antonym of '{word}' is '{opposite}'.",
            }
        )
    rng.shuffle(rows)
    return rows


# --------------------------------------------------------------------------------------------- conversations


def sharegpt_rows(rng: random.Random) -> list[Row]:
    rows: list[Row] = []

    def conv(turns: Iterable[tuple[str, str]], system: str | None, system_in_messages: bool) -> Row:
        messages = [{"from": "system", "value": system}] if system and system_in_messages else []
        for user, assistant in turns:
            messages += [{"from": "human", "value": user}, {"from": "gpt", "value": assistant}]
        row: Row = {"conversations": messages}
        if system and not system_in_messages:
            row["system"] = system
        return row

    for i, (system, turns) in enumerate(CONVERSATIONS):
        rows.append(conv(turns, system, system_in_messages=i % 2 == 0))
    for i, (country, capital, continent, other, note) in enumerate(CAPITALS[10:27]):
        turns = [
            (f"What is the capital of {country}?", capital_answer(country, capital, note)),
            ("Which continent is it in?", continent),
        ]
        if i % 3 == 0:
            turns.append(("Name another large city there.", f"{other} is another major city in {country}."))
        system = "You are a helpful geography assistant." if i % 5 == 0 else None
        rows.append(conv(turns, system, system_in_messages=True))
    for _ in range(16):
        a, b = rng.randint(3, 19), rng.randint(3, 19)
        d = rng.choice([2, 3, 4, 5])
        c = rng.randint(1, 12)
        c += (-(a * b + c)) % d  # make the sum divisible by d
        s = a * b + c
        rows.append(
            conv(
                [
                    (f"What is {a} times {b}?", f"{a} × {b} = {a * b}."),
                    (f"Now add {c} to that.", f"{a * b} + {c} = {s}."),
                    (f"And divide the result by {d}.", f"{s} ÷ {d} = {s // d}."),
                ],
                None,
                True,
            )
        )
    for km in (2, 3, 5, 8, 12, 15):
        rows.append(
            conv(
                [
                    (f"How many metres are in {km} kilometres?", f"There are {km * 1000:,} metres in {km} kilometres."),
                    ("And how many centimetres is that?", f"That is {km * 100_000:,} centimetres."),
                ],
                None,
                True,
            )
        )
    for hours in (2, 4, 6, 9, 24):
        rows.append(
            conv(
                [
                    (f"How many minutes are in {hours} hours?", f"There are {hours * 60:,} minutes in {hours} hours."),
                    ("How many seconds is that?", f"That is {hours * 3600:,} seconds."),
                ],
                "Answer briefly." if hours % 2 == 0 else None,
                system_in_messages=False,
            )
        )
    rng.shuffle(rows)
    return rows


def messages_rows(rng: random.Random) -> list[Row]:
    rows: list[Row] = []

    def chat(turns: Iterable[tuple[str, str]], system: str | None = None) -> Row:
        messages = [{"role": "system", "content": system}] if system else []
        for user, assistant in turns:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return {"messages": messages}

    for question, answer, follow_up, follow_answer in FOLLOW_UPS:
        rows.append(chat([(question, answer), (follow_up, follow_answer)]))
    for words in WORD_SETS:
        ordered = sorted(words, key=str.lower)
        rows.append(
            chat(
                [
                    (f"Sort these words alphabetically: {', '.join(words)}", ", ".join(ordered)),
                    ("Now in reverse order.", ", ".join(reversed(ordered))),
                ]
            )
        )
    candidates = [n for n in range(21, 200) if n % 10 not in (0, 5)]
    for n in sorted(rng.sample(candidates, 15)):
        divisors = _divisors(n)
        if len(divisors) == 2:
            first = f"Yes, {n} is a prime number: its only divisors are 1 and {n}."
        else:
            d = divisors[1]
            first = f"No, {n} is not prime. It is divisible by {d}: {n} = {d} × {n // d}."
        rows.append(
            chat(
                [(f"Is {n} a prime number?", first), ("List all of its divisors.", ", ".join(map(str, divisors)) + ".")]
            )
        )
    systems = [
        "You are a helpful assistant.",
        "You are a knowledgeable and friendly assistant.",
        "Answer clearly and briefly.",
    ]
    picks = [row for row in ALPACA_HANDWRITTEN if not row[1]][:15]
    for i, (instruction, _, output) in enumerate(picks):
        rows.append(chat([(instruction, output)], systems[i % len(systems)]))
    rng.shuffle(rows)
    return rows


# --------------------------------------------------------------------------------------------- preference (dpo)


def dpo_rows(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    for prompt, chosen, rejected in PREFERENCE_HANDWRITTEN:
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    for i, (country, capital, _, other, note) in enumerate(CAPITALS[:30]):
        rejected = rng.choice(LAZY + RUDE) if i % 3 == 2 else f"The capital of {country} is {other}."
        rows.append(
            {
                "prompt": f"What is the capital of {country}?",
                "chosen": capital_answer(country, capital, note),
                "rejected": rejected,
            }
        )
    seen: set[str] = set()
    while len(seen) < 40:
        kind = len(seen) % 4
        a, b = rng.randint(6, 49), rng.randint(3, 29)
        if kind == 0:
            prompt, value, work = f"What is {a} × {b}?", a * b, f"{a} × {b} = {a * b}."
        elif kind == 1:
            a, b = a * 7, b * 9
            prompt, value, work = f"What is {a} + {b}?", a + b, f"{a} + {b} = {a + b}."
        elif kind == 2:
            a, b = a * 11, b
            prompt, value, work = f"What is {a} - {b}?", a - b, f"{a} - {b} = {a - b}."
        else:
            pct, base = rng.choice([10, 20, 25, 50]), rng.randint(2, 40) * 20
            value = pct * base // 100
            prompt, work = (
                f"What is {pct}% of {base}?",
                f"{pct}% of {base} is {value}, because {pct / 100:g} × {base} = {value}.",
            )
        if prompt in seen:
            continue
        seen.add(prompt)
        if len(seen) % 8 == 0:
            rejected = rng.choice(["Use a calculator.", "Do your own homework.", "Roughly a lot."])
        else:
            wrong = value + rng.choice([-10, -2, -1, 1, 2, 10])
            rejected = f"The answer is {wrong}."
        rows.append({"prompt": prompt, "chosen": work, "rejected": rejected})
    for km in (3, 7, 15, 26, 50):
        rows.append(
            {
                "prompt": f"How many miles are {km} kilometres?",
                "chosen": f"{km} kilometres is about {km * 0.621371:.2f} miles (1 km ≈ 0.6214 miles).",
                "rejected": f"{km} kilometres is about {km * 1.609344:.2f} miles.",
            }
        )
    for c in (5, 20, 30, 40, 60):
        f = c * 9 / 5 + 32
        rows.append(
            {
                "prompt": f"What is {c} °C in Fahrenheit?",
                "chosen": f"{c} °C is {_num(f)} °F (multiply by 9/5, then add 32).",
                "rejected": f"{c} °C is {_num(c + 32)} °F.",
            }
        )
    for kg in (2, 5, 10, 25, 80):
        rows.append(
            {
                "prompt": f"How many pounds are in {kg} kilograms?",
                "chosen": f"{kg} kg is about {kg * 2.20462:.1f} pounds.",
                "rejected": f"{kg} kg is about {kg / 2.20462:.1f} pounds.",
            }
        )
    for m in (90, 150, 130, 200, 75):
        rows.append(
            {
                "prompt": f"How many hours and minutes is {m} minutes?",
                "chosen": f"{m} minutes is {m // 60} hour{'s' if m // 60 != 1 else ''} and {m % 60} minutes.",
                "rejected": f"{m} minutes is {m // 100} hours and {m % 100} minutes.",
            }
        )
    pool = [row for row in ALPACA_HANDWRITTEN if len(row[2]) > 40][:48]
    for i, (instruction, inp, output) in enumerate(pool):
        prompt = f"{instruction}\n\n{inp}" if inp else instruction
        kind = i % 4
        if kind == 0:
            rejected = pool[(i + 7) % len(pool)][2]  # an answer to a different question
        elif kind == 1:
            rejected = LAZY[i % len(LAZY)]
        elif kind == 2:
            rejected = RUDE[i % len(RUDE)]
        else:
            rejected = VAGUE[i % len(VAGUE)]
        rows.append({"prompt": prompt, "chosen": output, "rejected": rejected})
    rng.shuffle(rows)
    return rows


# --------------------------------------------------------------------------------------------- math (grpo / eval)

Problem = Callable[[random.Random, str, dict[str, str], str, str], tuple[str, int]]


def _train_templates() -> list[Problem]:
    def add(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        a, b = r.randint(5, 60), r.randint(3, 40)
        return f"{n} has {a} {item}. {p['P']} buys {b} more. How many {item} does {n} have now?", a + b

    def give(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        a = r.randint(20, 90)
        b = r.randint(3, a - 5)
        return f"{n} had {a} {item} and gave {b} of them to {m}. How many {item} does {n} have left?", a - b

    def boxes(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        a, b = r.randint(6, 24), r.randint(3, 15)
        return f"A box holds {a} {item}. How many {item} are there in {b} boxes?", a * b

    def share(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        each, k = r.randint(3, 15), r.randint(2, 8)
        total = each * k
        return f"{n} shares {total} {item} equally among {k} friends. How many {item} does each friend get?", each

    def reading(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        a, w = r.randint(5, 40), r.randint(1, 4)
        weeks = "week" if w == 1 else f"{w} weeks"
        return f"{n} reads {a} pages every day. How many pages does {p['p']} read in {weeks}?", a * 7 * w

    def sale(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        price, pct = r.randint(2, 15) * 20, r.choice([10, 20, 25, 50])
        thing = r.choice(["jacket", "pair of shoes", "backpack", "lamp", "bicycle helmet"])
        return f"A {thing} costs ${price}. It is on sale for {pct}% off. What is the sale price in dollars?", price * (
            100 - pct
        ) // 100

    def perimeter(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        a, b = r.randint(4, 40), r.randint(2, 30)
        return f"A rectangle is {a} cm long and {b} cm wide. What is its perimeter in centimetres?", 2 * (a + b)

    def area(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        a, b = r.randint(3, 25), r.randint(3, 25)
        return f"A garden is {a} metres long and {b} metres wide. What is its area in square metres?", a * b

    def saving(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        a, k = r.randint(3, 25), r.randint(3, 12)
        return f"{n} saves ${a} every week. How many weeks will it take {p['obj']} to save ${a * k}?", k

    def train(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        v, t = r.randint(4, 18) * 10, r.randint(2, 6)
        return f"A train travels at {v} kilometres per hour. How far does it travel in {t} hours?", v * t

    def shopping(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        a, price, pen = r.randint(2, 9), r.randint(2, 8), r.randint(1, 5)
        question = (
            f"{n} buys {a} notebooks that cost ${price} each and a pen that costs ${pen}. "
            f"How much does {p['p']} spend in total, in dollars?"
        )
        return question, a * price + pen

    def fraction(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        word, d = r.choice([("third", 3), ("quarter", 4), ("fifth", 5)])
        total = d * r.randint(4, 9)
        question = (
            f"There are {total} students in a class. One {word} of them walk to school. "
            "How many students do not walk to school?"
        )
        return question, total - total // d

    def average(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        x, y = r.randint(10, 30), r.randint(10, 30)
        z = r.randint(10, 30)
        z += (-(x + y + z)) % 3
        return f"{n} scored {x}, {y} and {z} points in three games. What was {p['poss']} average score?", (
            x + y + z
        ) // 3

    def bakery(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        a, b = r.randint(20, 60), r.randint(10, 40)
        c = r.randint(10, a + b - 5)
        question = (
            f"A bakery bakes {a} loaves in the morning and {b} loaves in the afternoon. It sells {c} loaves. "
            "How many loaves are left?"
        )
        return question, a + b - c

    def minutes(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        h, mins = r.randint(1, 9), r.randint(5, 55)
        return f"How many minutes are there in {h} hours and {mins} minutes?", h * 60 + mins

    def ages(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        a, b = r.randint(5, 15), r.randint(2, 9)
        return f"{n} is {a} years old. {m} is {b} years older than {n}. What is the sum of their ages?", 2 * a + b

    def shelves(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        a, b = r.randint(3, 8), r.randint(10, 30)
        c = r.randint(2, a * b // 2)
        question = f"Each of {a} shelves holds {b} books. {n} takes {c} books off the shelves. How many books remain?"
        return question, a * b - c

    basic = [add, give, boxes, share, reading, sale, perimeter, area, saving, train, shopping, fraction, average]
    return [*basic, bakery, minutes, ages, shelves]


def _eval_templates() -> list[Problem]:
    def rows_of_plants(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        a, b = r.randint(3, 12), r.randint(5, 20)
        c = r.randint(1, a * b // 3)
        question = f"A farmer plants {a} rows of {b} tomato plants. Rabbits eat {c} of the plants. How many are left?"
        return question, a * b - c

    def fuel(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        f, d = r.randint(5, 9), r.randint(2, 9) * 100
        return (
            f"A car uses {f} litres of fuel for every 100 kilometres. How many litres does it need for {d} kilometres?",
            f * d // 100,
        )

    def change(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        x, y = r.randint(5, 25), r.randint(4, 20)
        return (
            f"{n} pays for a ${x} book and a ${y} lunch with a $50 bill. How many dollars of change does {p['p']} get?",
            50 - x - y,
        )

    def jars(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        a, b, c = r.randint(6, 15), r.randint(3, 9), r.randint(2, 5)
        question = (
            f"{n} puts {a} cookies into each jar and fills {b} jars. {p['P']} has {c} cookies left over. "
            f"How many cookies did {p['p']} start with?"
        )
        return question, a * b + c

    def practice(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        mins, days = r.choice([(30, 6), (45, 4), (60, 5), (20, 6), (40, 3), (90, 2), (15, 4)])
        question = (
            f"{n} practises the violin for {mins} minutes a day, {days} days a week. "
            f"How many hours does {p['p']} practise each week?"
        )
        return question, mins * days // 60

    def buses(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        cap = r.choice([20, 30, 40, 45])
        total = r.randint(cap + 1, cap * 5)
        return (
            f"{total} students are going on a trip. Each bus holds {cap} students. How many buses are needed?",
            math.ceil(total / cap),
        )

    def rope(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        s, k = r.randint(2, 9), r.randint(3, 15)
        return (
            f"A rope {s * k} metres long is cut into pieces that are each {s} metres long. How many pieces are there?",
            k,
        )

    def tank(r: random.Random, n: str, p: dict[str, str], m: str, item: str) -> tuple[str, int]:
        word, num, den = r.choice([("half", 1, 2), ("a quarter", 1, 4), ("three quarters", 3, 4), ("a fifth", 1, 5)])
        capacity = den * r.randint(10, 60) * 10
        question = (
            f"A water tank holds {capacity} litres and is {word} full. How many more litres are needed to fill it?"
        )
        return question, capacity - capacity * num // den

    return [rows_of_plants, fuel, change, jars, practice, buses, rope, tank]


def math_rows(rng: random.Random, templates: list[Problem], count: int, avoid: set[str]) -> list[Row]:
    rows: list[Row] = []
    seen = set(avoid)
    i = 0
    while len(rows) < count:
        template = templates[i % len(templates)]
        i += 1
        (name, pronoun), (other, _) = rng.sample(NAMES, 2)
        question, answer = template(rng, name, _pron(pronoun), other, rng.choice(ITEMS))
        if question in seen:
            continue
        seen.add(question)
        rows.append({"prompt": question, "answer": str(answer), "data_source": "demo_math"})
    return rows


# --------------------------------------------------------------------------------------------- plain text (pt)


def number_paragraph(rng: random.Random, n: int) -> str:
    divisors = _divisors(n)
    factors = _factorize(n)
    first = f"The number {n} is {'even' if n % 2 == 0 else 'odd'}."
    facts = []
    if len(divisors) == 2:
        facts.append("It is a prime number, so its only divisors are 1 and itself.")
    else:
        facts.append(
            f"Its prime factorization is {' × '.join(map(str, factors))}, and it has {len(divisors)} divisors in all: "
            f"{_join([str(d) for d in divisors])}."
        )
    digit_sum = sum(int(ch) for ch in str(n))
    if n % 3 == 0:
        facts.append(f"The sum of its digits is {digit_sum}, a multiple of 3, which is why {n} is divisible by 3.")
    else:
        facts.append(f"The sum of its digits is {digit_sum}, which is not a multiple of 3, so neither is {n}.")
    facts.append(f"Squared, it becomes {n * n:,}.")
    facts.append(f"In binary it is written {bin(n)[2:]}.")
    facts.append(f"The Romans would have written it as {_roman(n)}.")
    root = math.isqrt(n)
    if root * root == n:
        facts.append(f"It is a perfect square, because {root} × {root} = {n}.")
    if n % 10 == 0:
        facts.append("Because it ends in zero, it is divisible by 10.")
    rng.shuffle(facts)
    return " ".join([first, *facts[: rng.randint(2, len(facts))]])


TOWN_START = ["Ash", "Bram", "Cold", "Dun", "Elm", "Fern", "Glen", "Harrow", "Iron", "Kings", "Lark", "Mill"]
TOWN_START += ["North", "Oak", "Pen", "Red", "Stone", "Thorn", "Wester", "Willow"]
TOWN_END = ["ford", "bridge", "wick", "haven", "ton", "by", "mere", "stead", "field", "holm"]
RIVERS = ["Avel", "Brisk", "Carrow", "Dunnet", "Elder", "Fallow", "Greywater", "Harl", "Linnet", "Morrow"]
TRADES = ["pottery", "wool", "apple orchards", "boatbuilding", "cheese", "glassmaking", "clockmaking", "paper mills"]
TRADES += ["honey", "slate quarries"]
FESTIVALS = [
    ("May", "blossom"),
    ("June", "midsummer lantern"),
    ("August", "harvest"),
    ("September", "river regatta"),
    ("October", "apple"),
    ("December", "winter light"),
    ("April", "kite"),
    ("July", "brass band"),
]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"]
MONTHS += ["November", "December"]


def town_paragraph(rng: random.Random, name: str) -> str:
    river, trade = rng.choice(RIVERS), rng.choice(TRADES)
    month, festival = rng.choice(FESTIVALS)
    founded = rng.randint(1150, 1750)
    bridge = rng.randint(founded + 20, 1850)
    clock = rng.randint(max(bridge, 1700), 1900)
    railway = rng.randint(1845, 1905)
    people = rng.randint(18, 240) * 50
    opening = rng.choice(
        [
            f"{name} is a small town on the banks of the River {river}.",
            f"{name} sits in a quiet valley where the River {river} bends toward the sea.",
            f"The town of {name} grew up around a ford across the River {river}.",
        ]
    )
    details = [
        f"It was founded around {founded} as a market for the surrounding farms.",
        f"Today about {people:,} people live there.",
        f"For generations the town has been known for its {trade}.",
        f"Every {month}, the streets fill with visitors for the {festival} festival.",
        f"Its oldest landmark is a stone bridge with {rng.randint(3, 9)} arches, built in {bridge}.",
        f"The clock tower in the market square has chimed the hours since {clock}.",
        f"A branch railway reached the town in {railway}, and the old station is now a café.",
    ]
    chosen = details[:2] + rng.sample(details[2:], rng.randint(1, 4))
    return " ".join([opening, *chosen])


STORIES = [
    (
        "baker",
        "the old oven refused to heat",
        "borrowed a neighbour's wood-fired oven and baked every loaf "
        "there, and customers said the bread had never tasted better",
    ),
    (
        "sailor",
        "a sudden storm tore the mainsail",
        "lashed what was left of the sail, steered by the stars and reached the harbour at dawn",
    ),
    (
        "teacher",
        "the projector broke just before a lesson on the planets",
        "took the class outside and drew the solar system in chalk across the whole playground",
    ),
    (
        "gardener",
        "a late frost threatened the young seedlings",
        "covered every bed with old sheets and kept lanterns burning between the rows all night",
    ),
    (
        "clockmaker",
        "the town's tower clock stopped at noon",
        "climbed the tower, found a worn gear and cut a new one by hand",
    ),
    (
        "librarian",
        "a leaking pipe dripped toward the rare book room",
        "moved the shelves one by one and dried every damp page with blotting paper",
    ),
    (
        "beekeeper",
        "a swarm left one of the hives and settled high in an oak tree",
        "climbed a ladder at dusk, shook the swarm gently into a basket and carried it home",
    ),
    (
        "fisher",
        "the nets came up empty for a whole week",
        "studied the tides and the birds, moved to a new bay and returned with the best catch of the season",
    ),
    (
        "carpenter",
        "a customer needed a table finished in a single day",
        "worked from sunrise, fitting each joint with care, and delivered the table before the evening meal",
    ),
    (
        "postal worker",
        "snow closed the road to the farthest farms",
        "strapped on snowshoes and carried the letters up the hill on foot",
    ),
    (
        "painter",
        "rain washed away a mural only half finished",
        "waited for the wall to dry and began again, this time adding a rainbow to the design",
    ),
    (
        "shepherd",
        "fog rolled over the hills while the flock was out",
        "whistled the old signals to the dog, and together they brought every sheep home",
    ),
]
STORY_OPENINGS = [
    "{name} worked as a {job} in the town of {town}.",
    "In the town of {town} there lived a {job} named {name}.",
    "For twenty years, {name} had been the only {job} in {town}.",
]
STORY_WHEN = ["One day", "One year", "Early one morning", "One busy Saturday", "Once"]
STORY_ENDINGS = [
    "Years later, people in {town} still told the story.",
    "{P} always said that problems were just puzzles in disguise.",
    "After that, nobody in {town} ever doubted {obj} again.",
    "It became the day {name} liked to remember most.",
    "",
]


def story_paragraph(rng: random.Random, name: str, pronoun: str, town: str) -> str:
    job, problem, resolution = rng.choice(STORIES)
    words = _pron(pronoun)
    article = "an" if job[0] in "aeiou" else "a"
    opening = rng.choice(STORY_OPENINGS).format(name=name, job=job, town=town).replace(f"a {job}", f"{article} {job}")
    parts = [
        opening,
        f"{rng.choice(STORY_WHEN)}, {problem}.",
        f"Instead of giving up, {name} {resolution}.",
        rng.choice(STORY_ENDINGS).format(town=town, name=name, **words),
    ]
    return " ".join(p for p in parts if p)


def _clock(minutes: int) -> str:
    minutes %= 24 * 60
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def travel_paragraph(rng: random.Random, name: str, pronoun: str) -> str:
    words = _pron(pronoun)
    kind = rng.randint(0, 2)
    if kind == 0:
        speed, half_hours = rng.randint(12, 24), rng.randint(2, 8)
        hours = half_hours / 2
        start = rng.randint(6 * 60, 10 * 60) // 5 * 5
        return (
            f"{name} set off on {words['poss']} bicycle at {_clock(start)}, riding at a steady {speed} kilometres "
            f"per hour. After {_num(hours)} hours {words['p']} had covered {_num(speed * hours)} kilometres, and "
            f"{words['p']} stopped for lunch at {_clock(start + half_hours * 30)}."
        )
    if kind == 1:
        start, duration = rng.randint(5 * 60, 20 * 60) // 5 * 5, rng.randint(35, 260)
        return (
            f"The train left the station at {_clock(start)}. The journey took {duration} minutes, which is "
            f"{duration // 60} hours and {duration % 60} minutes, so it arrived at {_clock(start + duration)}. "
            f"{name} spent most of the trip reading by the window."
        )
    pace, minutes = rng.randint(90, 120), rng.randint(15, 60)
    return (
        f"{name} walks at about {pace} steps a minute. On {words['poss']} {minutes}-minute walk to work, "
        f"{words['p']} takes roughly {pace * minutes:,} steps, and over a five-day week that adds up to "
        f"{pace * minutes * 5:,} steps for the morning walks alone."
    )


SEASONS = {
    "spring": (["March", "April", "May"], (4, 18), ["blackbirds", "robins", "swallows", "wrens"]),
    "summer": (["June", "July", "August"], (16, 31), ["swifts", "goldfinches", "sparrows", "house martins"]),
    "autumn": (["September", "October", "November"], (3, 17), ["starlings", "jays", "thrushes", "robins"]),
    "winter": (["December", "January", "February"], (-8, 6), ["redwings", "blue tits", "robins", "fieldfares"]),
}
SKIES = ["clear and pale blue", "heavy with grey cloud", "streaked with thin high cloud", "hazy", "bright after rain"]


def journal_paragraph(rng: random.Random) -> str:
    season = rng.choice(list(SEASONS))
    months, (low, high), birds = SEASONS[season]
    month, day = rng.choice(months), rng.randint(1, 28)
    celsius = rng.randint(low, high)
    fahrenheit = celsius * 9 / 5 + 32
    first, second = rng.sample(birds, 2)
    n1, n2 = rng.randint(2, 9), rng.randint(2, 12)
    parts = [
        f"Notes for {day} {month}. The thermometer by the shed read {celsius} °C ({_num(fahrenheit)} °F) at seven "
        f"o'clock, and the sky was {rng.choice(SKIES)}.",
        f"I counted {n1} {first} and {n2} {second} around the feeder, {n1 + n2} birds in all.",
    ]
    extras = {
        "spring": "The first buds have opened on the hawthorn hedge.",
        "summer": "The grass at the edge of the field is already turning gold.",
        "autumn": "Leaves are gathering in the corners of the yard.",
        "winter": "The pond was covered with a thin skin of ice." if celsius <= 0 else "The ground is soft and wet.",
    }
    if rng.random() < 0.7:
        parts.append(extras[season])
    return " ".join(parts)


SOUPS = [
    ("carrots", "are", 20),
    ("pumpkin", "is", 20),
    ("leeks", "are", 15),
    ("tomatoes", "are", 15),
    ("mushrooms", "are", 10),
    ("potatoes", "are", 20),
    ("cauliflower", "is", 15),
    ("sweet potatoes", "are", 20),
    ("broccoli", "is", 10),
    ("peas", "are", 5),
    ("parsnips", "are", 20),
    ("butternut squash", "is", 20),
]
CRUMBLES = ["apple", "pear", "plum", "rhubarb", "apple and blackberry", "peach"]


def soup_paragraph(rng: random.Random, veg: str, verb: str, minutes: int) -> str:
    grams = rng.choice([400, 500, 600, 750])
    garnish = rng.choice(
        ["a swirl of cream", "chopped parsley", "toasted seeds", "a spoonful of yogurt", "crusty bread"]
    )
    return (
        f"A simple {veg} soup needs only a few ingredients: about {grams} grams of {veg}, one onion, a clove of "
        f"garlic, a litre of stock and a little oil. Chop the onion and soften it gently in the oil for about "
        f"{rng.choice([5, 8, 10])} minutes. Add the garlic and the {veg}, pour in the stock and simmer until the "
        f"{veg} {verb} tender, about {minutes} minutes. Blend until smooth, season with salt and pepper, and serve "
        f"with {garnish}."
    )


def crumble_paragraph(rng: random.Random, fruit: str) -> str:
    serves = rng.choice([4, 6])
    return (
        (
            f"For an {fruit} crumble that serves {serves}, slice the fruit into a baking dish and sprinkle it with a "
            "little sugar. Rub 100 grams of cold butter into 150 grams of flour until the mixture looks like "
            "breadcrumbs, then stir in 75 grams of sugar. Scatter the topping over the fruit and bake at 180 °C for "
            "about 35 minutes, until it is golden and the juices bubble at the edges."
        )
        .replace("For an p", "For a p")
        .replace("For an r", "For a r")
    )


def pt_rows(rng: random.Random) -> list[Row]:
    texts: list[str] = list(PT_PARAGRAPHS)
    numbers = sorted(rng.sample(range(12, 1000), 70))
    texts += [number_paragraph(rng, n) for n in numbers]
    towns = sorted({start + end for start in TOWN_START for end in TOWN_END})
    town_names = rng.sample(towns, 100)
    texts += [town_paragraph(rng, name) for name in town_names[:50]]
    for i in range(50):
        name, pronoun = NAMES[i % len(NAMES)]
        texts.append(story_paragraph(rng, name, pronoun, town_names[50 + i]))
    for i in range(35):
        name, pronoun = NAMES[(i * 7) % len(NAMES)]
        texts.append(travel_paragraph(rng, name, pronoun))
    texts += [journal_paragraph(rng) for _ in range(46)]
    texts += [soup_paragraph(rng, *soup) for soup in SOUPS]
    texts += [crumble_paragraph(rng, fruit) for fruit in CRUMBLES]
    unique = list(dict.fromkeys(texts))[:300]
    rng.shuffle(unique)
    return [{"text": text} for text in unique]


# --------------------------------------------------------------------------------------------- main


def write_jsonl(name: str, rows: list[Row]) -> None:
    path = DATA / name
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{path.relative_to(HERE.parent.parent)}: {len(rows)} rows")


def write_json(name: str, rows: list[Row]) -> None:
    path = DATA / name
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{path.relative_to(HERE.parent.parent)}: {len(rows)} rows")


def main() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    write_jsonl("demo_sft_alpaca.jsonl", alpaca_rows(random.Random(1)))
    write_json("demo_sft_sharegpt.json", sharegpt_rows(random.Random(2)))
    write_jsonl("demo_sft_messages.jsonl", messages_rows(random.Random(3)))
    write_jsonl("demo_dpo.jsonl", dpo_rows(random.Random(4)))
    train = math_rows(random.Random(5), _train_templates(), 300, set())
    write_jsonl("demo_grpo_math.jsonl", train)
    write_jsonl(
        "demo_eval_math.jsonl", math_rows(random.Random(6), _eval_templates(), 60, {r["prompt"] for r in train})
    )
    write_jsonl("demo_pt.jsonl", pt_rows(random.Random(7)))


if __name__ == "__main__":
    main()
