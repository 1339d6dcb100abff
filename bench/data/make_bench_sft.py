"""Generate bench/data/bench_sft.jsonl: ~300 instruction/response pairs (alpaca format) with chat-like lengths.

    python bench/data/make_bench_sft.py            # writes bench/data/bench_sft.jsonl
    python bench/data/make_bench_sft.py --check    # exit 1 if the file on disk differs from a fresh generation

The content is original, written for this project: a bank of short explanatory texts on everyday topics, plus
task families whose answers are computed (arithmetic with worked steps, number facts, unit tables, list and word
tasks, small Python functions). Lengths are drawn like real chat data: a response length target from a
log-normal distribution (median ~70 tokens, many short answers, a tail up to ~450 tokens), and prompts of
10-150 tokens (most are one line; some carry an input text to summarize, rewrite or classify).
Deterministic: a fixed seed, no clock, no tokenizer (lengths are planned in characters, ~4.2 per token).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "bench_sft.jsonl"
SEED = 20240611
ROWS = 300
CHARS_PER_TOKEN = 4.2
MEDIAN_TOKENS = 70
SIGMA = 0.95
MIN_TOKENS, MAX_TOKENS = 4, 450

Row = dict[str, str]

# ----------------------------------------------------------------------------------------------- topic bank
# Each topic: a one-line definition, then sentences in an order that reads as a coherent explanation.
TOPICS: dict[str, list[str]] = {
    "photosynthesis": [
        "Photosynthesis is the process plants use to turn light, water and carbon dioxide into sugar and oxygen.",
        "It happens mostly in the leaves, inside small structures called chloroplasts.",
        "Chloroplasts contain chlorophyll, a green pigment that absorbs red and blue light and reflects green.",
        "Water comes up from the roots through the stem, while carbon dioxide enters the leaf through tiny pores "
        "called stomata.",
        "In the first stage, light energy splits water molecules and releases oxygen as a by-product.",
        "The energy captured in that stage is stored briefly in carrier molecules.",
        "In the second stage, often called the Calvin cycle, that stored energy is used to build sugar from carbon "
        "dioxide.",
        "The plant uses the sugar for energy and as a building block for starch and cellulose.",
        "Almost all the oxygen in the air we breathe was released by photosynthesis over millions of years.",
        "On a hot, dry day a plant may close its stomata to save water, which also slows photosynthesis.",
        "Light intensity, temperature and the amount of carbon dioxide all limit how fast the process runs.",
        "Greenhouse growers sometimes add extra carbon dioxide to the air to make their plants grow faster.",
    ],
    "the water cycle": [
        "The water cycle is the continuous movement of water between the oceans, the air and the land.",
        "The sun heats water in oceans, lakes and rivers, and some of it evaporates into water vapour.",
        "Plants also release water vapour from their leaves, a process called transpiration.",
        "As warm, moist air rises it cools, and the vapour condenses into tiny droplets that form clouds.",
        "When the droplets join together and grow heavy, they fall as rain, snow, sleet or hail.",
        "Some of that water runs off the surface into streams and rivers and flows back to the sea.",
        "Some soaks into the ground and becomes groundwater, which can stay underground for thousands of years.",
        "Snow that falls on high mountains may be stored as ice in glaciers before it melts in spring.",
        "The total amount of water on Earth stays roughly the same; it only changes form and place.",
        "Because evaporation leaves salt behind, rain is fresh water even when it started in the ocean.",
        "A warmer climate speeds up evaporation, which tends to make heavy rainfall events more intense.",
    ],
    "how vaccines work": [
        "A vaccine trains the immune system to recognise a germ without the person having to catch the disease.",
        "It contains a harmless piece of the germ, a weakened or inactivated germ, or instructions to make one "
        "of its proteins.",
        "The immune system reacts to this material as if it were a real infection.",
        "Special white blood cells produce antibodies that fit the shape of the germ's surface.",
        "Other cells, called memory cells, remain in the body for months or years after the vaccination.",
        "If the real germ arrives later, the memory cells recognise it and launch a fast, strong response.",
        "That speed often stops the infection before it can cause serious illness.",
        "Some vaccines need more than one dose, because a booster makes the memory stronger and longer lasting.",
        "Mild side effects such as a sore arm or a slight fever are signs that the immune system is responding.",
        "When many people in a community are vaccinated, the germ has fewer chances to spread, which also "
        "protects people who cannot be vaccinated.",
    ],
    "compound interest": [
        "Compound interest is interest calculated on both the original amount and the interest already added.",
        "With simple interest, a deposit of 1,000 at 5% earns 50 every year, no more and no less.",
        "With compound interest, the 50 earned in the first year also earns interest in the second year.",
        "After two years the balance is 1,102.50 instead of 1,100, and the gap keeps widening over time.",
        "The general formula is A = P(1 + r/n)^(nt), where P is the principal, r the yearly rate, n the number "
        "of compounding periods a year and t the number of years.",
        "More frequent compounding, such as monthly instead of yearly, gives a slightly higher balance.",
        "A handy estimate is the rule of 72: divide 72 by the yearly rate to find roughly how many years it takes "
        "to double the money.",
        "At 6% a year, money doubles in about 12 years; at 9% it doubles in about 8 years.",
        "Compounding works against you on debts, which is why unpaid credit card balances grow so quickly.",
        "Starting to save early matters more than the amount, because time gives compounding room to work.",
    ],
    "version control with git": [
        "Git is a version control system: it records snapshots of a project so you can see and undo changes.",
        "Each snapshot is called a commit and stores who made the change, when, and a message explaining why.",
        "You choose what goes into a commit by staging files with git add, then record them with git commit.",
        "Branches let you work on a feature without disturbing the main line of development.",
        "When the feature is ready, you merge the branch back, and Git combines the two histories.",
        "If the same lines changed on both sides, Git reports a conflict and asks you to choose the result.",
        "A remote such as a shared server holds a copy of the repository so a team can exchange commits.",
        "git push sends your commits to the remote, and git pull fetches other people's commits and merges them.",
        "Small commits with clear messages make the history easy to read and mistakes easy to revert.",
        "Because every clone holds the full history, you can commit, branch and inspect the log without a network.",
        "Tags mark important commits, such as releases, with a name that never moves.",
    ],
    "bicycle gears": [
        "Bicycle gears let a rider keep a comfortable pedalling speed on flat roads, hills and descents.",
        "The chain connects a chainring at the pedals to a cog on the rear wheel.",
        "A large chainring with a small rear cog gives a hard, fast gear for flat roads or going downhill.",
        "A small chainring with a large rear cog gives an easy gear that makes climbing possible.",
        "The gear ratio is the number of teeth on the chainring divided by the number of teeth on the cog.",
        "With a 48-tooth chainring and a 16-tooth cog, the wheel turns three times for every turn of the pedals.",
        "The derailleur is the mechanism that pushes the chain sideways from one cog to the next.",
        "Shifting works best while pedalling lightly, because a chain under heavy load shifts roughly.",
        "Riders should avoid crossing the chain from the largest chainring to the largest cog, which wears parts.",
        "A clean, lightly oiled chain shifts more smoothly and lasts much longer.",
    ],
    "sleep and memory": [
        "Sleep plays an important part in turning the day's experiences into lasting memories.",
        "During deep sleep, the brain replays patterns of activity from the day, which strengthens new memories.",
        "Dream-rich REM sleep seems to help with skills and with linking new information to older knowledge.",
        "Students who sleep after studying usually remember more than those who stay awake for the same time.",
        "Even a short nap of twenty minutes can improve alertness and help with learning later in the day.",
        "Too little sleep makes it harder to concentrate, so less information is stored in the first place.",
        "Most adults need seven to nine hours a night, while teenagers often need a little more.",
        "Going to bed and getting up at regular times helps the body clock keep a steady rhythm.",
        "Bright screens late at night can delay sleepiness by suppressing the hormone melatonin.",
        "Caffeine stays in the body for many hours, so an afternoon coffee can still affect sleep at night.",
    ],
    "home composting": [
        "Composting turns kitchen and garden waste into a dark, crumbly material that feeds the soil.",
        "Microorganisms, worms and insects break down the waste, and they need air, water and the right mix of "
        "materials.",
        "Green materials such as vegetable peelings, coffee grounds and grass clippings supply nitrogen.",
        "Brown materials such as dry leaves, straw and shredded cardboard supply carbon.",
        "A good rule of thumb is roughly two or three parts brown material to one part green.",
        "The heap should feel as damp as a wrung-out sponge; too wet and it smells, too dry and it stops working.",
        "Turning the heap every week or two lets air in and speeds up the process.",
        "Meat, dairy and oily food attract pests and are best left out of a home compost bin.",
        "Depending on the season and care, compost is usually ready in two months to a year.",
        "Finished compost smells earthy, and most of the original materials can no longer be recognised.",
    ],
    "the printing press": [
        "The printing press with movable metal type was developed in Europe in the fifteenth century.",
        "Before it, books were copied by hand, which made them slow to produce and very expensive.",
        "Movable type meant that individual letters could be arranged into pages, printed and reused.",
        "A screw press, adapted from presses used for wine and olive oil, pushed paper evenly onto the inked type.",
        "Oil-based inks stuck to metal type far better than the water-based inks used for woodblocks.",
        "Within a few decades, print shops had opened in hundreds of European towns.",
        "Cheaper books helped spread literacy, news and new scientific ideas much faster than before.",
        "Printing also encouraged standard spelling, because the same text reached readers everywhere.",
        "Block printing had been used in East Asia for centuries before, and movable type had been tried there too.",
        "The printing press is often listed among the inventions that most changed how people share knowledge.",
    ],
    "HTTP requests": [
        "HTTP is the protocol web browsers and servers use to exchange pages, images and data.",
        "A request starts with a method, such as GET to read something or POST to send data.",
        "The method is followed by a path, like /index.html, and a set of headers.",
        "Headers carry extra information, such as the kind of content the client accepts and any cookies.",
        "The server answers with a status code, its own headers, and usually a body.",
        "Status 200 means success, 404 means the resource was not found and 500 means the server failed.",
        "Codes in the 300 range tell the client to look elsewhere, for example after a page has moved.",
        "HTTP itself is stateless: each request is independent, so cookies or tokens are used to keep a login.",
        "HTTPS is HTTP sent over an encrypted connection, which protects passwords and other private data.",
        "Modern versions of the protocol can send many requests over one connection, which makes pages load faster.",
    ],
    "plate tectonics": [
        "Plate tectonics is the theory that the Earth's outer shell is split into large plates that slowly move.",
        "The plates float on a hotter, softer layer of the mantle and move a few centimetres a year.",
        "Where plates pull apart, magma rises and forms new crust, as along the middle of the Atlantic Ocean.",
        "Where they collide, one plate may sink beneath the other, creating deep trenches and volcanoes.",
        "When two continental plates collide, the crust crumples upwards and builds mountain ranges.",
        "Where plates slide past each other, stress builds up and is released suddenly as earthquakes.",
        "The shapes of the continents and matching fossils on distant coasts were early clues to the theory.",
        "Magnetic stripes on the ocean floor showed that the sea floor spreads outwards from mid-ocean ridges.",
        "Millions of years ago the continents were joined in a single supercontinent called Pangaea.",
        "Plate movement continues today, so the map of the world will look different in the distant future.",
    ],
    "household budgeting": [
        "A household budget is a plan for how money coming in will be spent, saved and set aside.",
        "The first step is to write down all income after tax for a typical month.",
        "Next, list fixed costs such as rent, insurance and loan payments, which change little from month to month.",
        "Then estimate variable costs such as food, transport and entertainment from a few months of receipts.",
        "A popular starting point is to aim for about half of income on needs, 30% on wants and 20% on savings.",
        "An emergency fund covering three to six months of essential costs protects against surprises.",
        "Reviewing subscriptions often reveals services that are no longer used.",
        "Paying off high-interest debt first usually saves more money than any other single step.",
        "A budget works best when it is checked every month and adjusted when circumstances change.",
        "Small, regular transfers into savings on payday are easier to keep up than saving whatever is left.",
    ],
    "how a refrigerator works": [
        "A refrigerator keeps food cold by moving heat from the inside of the cabinet to the room outside.",
        "It does this with a refrigerant, a fluid that boils at a very low temperature.",
        "Inside the fridge, the liquid refrigerant evaporates in coils and absorbs heat from the air around them.",
        "A compressor then squeezes the vapour, which raises its pressure and temperature.",
        "The hot vapour flows through coils at the back or bottom, where it gives its heat to the kitchen air.",
        "As it cools, it condenses back into a liquid.",
        "The liquid passes through a narrow valve, its pressure drops, and the cycle starts again.",
        "A thermostat switches the compressor on and off to keep the inside near the chosen temperature.",
        "Keeping the door closed and leaving space around the back coils helps the fridge use less electricity.",
        "A temperature of about 4 degrees Celsius slows the growth of most bacteria that spoil food.",
    ],
    "learning a new language": [
        "Learning a new language goes fastest with a little practice every day rather than long, rare sessions.",
        "The most common thousand words cover a large share of everyday conversation, so they are worth learning "
        "first.",
        "Spaced repetition, reviewing words just before you are likely to forget them, makes vocabulary stick.",
        "Listening to real speech, such as podcasts or films with subtitles, trains the ear for rhythm and sound.",
        "Speaking early, even with mistakes, builds confidence and shows which phrases you really need.",
        "Short conversations with a patient partner are more useful than memorising long lists of rules.",
        "Grammar makes more sense once you have seen many examples of it in context.",
        "Writing a few sentences a day about your own life turns passive knowledge into active use.",
        "Progress often feels slow at the intermediate stage, but steady exposure keeps paying off.",
        "Setting a concrete goal, such as ordering a meal or reading a short story, keeps motivation high.",
    ],
    "the phases of the moon": [
        "The moon's phases are the changing shapes of its sunlit side as seen from Earth.",
        "The moon does not make its own light; half of it is always lit by the sun.",
        "As the moon orbits the Earth, we see different amounts of that lit half.",
        "At new moon it sits roughly between the Earth and the sun, so the lit side faces away from us.",
        "Over the following days a thin crescent appears, growing into a first quarter, when half the disc is lit.",
        "About two weeks after new moon, the whole disc is lit at full moon.",
        "The lit part then shrinks again through the last quarter back towards the next new moon.",
        "A full cycle of phases takes about 29.5 days, which is where the idea of a month comes from.",
        "Because the moon's orbit is tilted, it rarely lines up exactly with the sun and Earth, so eclipses are rare.",
        "The same side of the moon always faces the Earth, because its rotation matches its orbit.",
    ],
    "unit testing": [
        "A unit test checks that one small piece of code, such as a function, behaves as expected.",
        "Each test sets up some input, calls the code and compares the result with the expected value.",
        "Good tests are fast, independent of each other and give the same result every time they run.",
        "Testing edge cases, such as empty lists, zero or very large values, catches many hidden bugs.",
        "When a bug is found, writing a test that reproduces it first makes sure it never returns.",
        "Tests act as documentation, because they show exactly how the code is meant to be used.",
        "Running the tests automatically on every change gives quick feedback before mistakes spread.",
        "Code that is hard to test is often a sign that a function is doing too many things at once.",
        "Test names should describe the behaviour being checked, so a failure explains itself.",
        "A high number of tests is not the goal; tests that would catch real mistakes are.",
    ],
}

TIPS: dict[str, list[str]] = {
    "sleeping better": [
        "Keep the same bedtime and wake-up time, even at weekends.",
        "Make the bedroom dark, quiet and a little cool.",
        "Avoid caffeine after early afternoon.",
        "Put screens away half an hour before bed.",
        "Get some daylight in the morning to set your body clock.",
        "Keep naps short, about twenty minutes, and not too late in the day.",
        "Avoid heavy meals right before going to bed.",
        "If you cannot sleep, get up and read quietly until you feel sleepy.",
        "Exercise regularly, but finish hard workouts a few hours before bed.",
        "Write down tomorrow's worries in a notebook so your mind can let go of them.",
    ],
    "saving money on groceries": [
        "Plan the week's meals before you shop.",
        "Write a list and stick to it.",
        "Compare prices per kilogram rather than per package.",
        "Buy fruit and vegetables that are in season.",
        "Cook larger batches and freeze portions for busy days.",
        "Use leftovers for lunches the next day.",
        "Try store brands for staples such as rice, flour and pasta.",
        "Avoid shopping when you are hungry.",
        "Check what is already in the cupboard before you leave home.",
        "Buy long-lasting items in bulk only if you will really use them.",
    ],
    "writing clear emails": [
        "Put the main point or request in the first two sentences.",
        "Use a subject line that says what the email is about.",
        "Keep paragraphs short, with one idea each.",
        "Say clearly what you need from the reader and by when.",
        "Use bullet points for lists of questions or steps.",
        "Read the email once from the reader's point of view before sending.",
        "Remove words that add nothing, such as 'just' and 'actually'.",
        "Reply to all questions in the order they were asked.",
        "Check names, dates and attachments before pressing send.",
        "End with a friendly sign-off and your contact details if needed.",
    ],
    "studying for an exam": [
        "Start reviewing a few weeks early instead of cramming the night before.",
        "Test yourself with practice questions rather than only rereading notes.",
        "Spread study sessions over several days.",
        "Explain each topic aloud as if teaching a friend.",
        "Take a short break every 45 to 50 minutes.",
        "Focus first on the topics you find hardest.",
        "Work through past papers under timed conditions.",
        "Keep your phone in another room while studying.",
        "Sleep well the night before the exam.",
        "Eat a light meal and arrive early on the day.",
    ],
    "keeping houseplants healthy": [
        "Check the soil before watering; most plants prefer to dry out slightly between waterings.",
        "Use pots with drainage holes so roots do not sit in water.",
        "Place plants according to their light needs, not just where they look nice.",
        "Wipe dust off large leaves so they can take in light.",
        "Feed plants lightly during spring and summer, when they grow most.",
        "Turn pots every few weeks so the plant grows evenly.",
        "Repot when roots start growing out of the drainage holes.",
        "Keep plants away from cold draughts and hot radiators.",
        "Look under leaves regularly for pests.",
        "Water less in winter, when growth slows down.",
    ],
    "writing readable code": [
        "Give variables and functions names that say what they hold or do.",
        "Keep functions short and focused on one task.",
        "Prefer simple, direct code over clever tricks.",
        "Write comments that explain why, not what.",
        "Handle errors close to where they can happen.",
        "Avoid repeating the same logic in several places.",
        "Use consistent formatting, ideally enforced by a tool.",
        "Limit the number of parameters a function takes.",
        "Delete code that is no longer used instead of commenting it out.",
        "Add tests for the behaviour you care about.",
    ],
}

SENTENCES = [
    "The morning train was late because of a signal problem near the bridge.",
    "My grandmother grows tomatoes, beans and sunflowers in her small garden.",
    "The library will stay open until nine o'clock on Thursdays this summer.",
    "We watched the storm roll in from the porch and counted the seconds after each flash.",
    "Please remember to bring a packed lunch and a waterproof jacket on Friday.",
    "The new bakery on the corner sells bread made with flour from a local mill.",
    "Our team finished the project two days ahead of schedule.",
    "The children built a model volcano for the school science fair.",
    "A fox crossed the road just as the sun went down behind the hills.",
    "The museum has added a room about the history of the town's canal.",
    "She practised the piano every evening for a month before the concert.",
    "The recipe needs three eggs, a cup of sugar and a pinch of salt.",
    "The hikers reached the summit shortly before noon and ate lunch by the cairn.",
    "He fixed the squeaky door with a few drops of oil.",
    "The festival attracts musicians from more than twenty countries every year.",
    "Our neighbour's cat sleeps on the warm roof of the car every afternoon.",
    "The report shows that sales rose steadily during the second half of the year.",
    "They painted the kitchen a pale shade of green last weekend.",
    "The bus to the airport leaves every twenty minutes from the main square.",
    "Fresh snow covered the village overnight, and the schools stayed closed.",
]

REVIEWS = [
    ("The soup was cold and the waiter ignored us for half an hour.", "negative"),
    ("Absolutely loved the hotel: friendly staff and a spotless room.", "positive"),
    ("The headphones sound fine, nothing special, but the price was fair.", "neutral"),
    ("This book kept me up all night, I could not put it down!", "positive"),
    ("The app crashes every time I try to upload a photo.", "negative"),
    ("Delivery took the expected three days and the box arrived intact.", "neutral"),
    ("Best coffee in town, and the pastries are always fresh.", "positive"),
    ("The instructions were confusing and two screws were missing.", "negative"),
    ("The film was long, but the ending made it worth the wait.", "positive"),
    ("The jacket fits as described and the colour matches the photo.", "neutral"),
    ("I waited on hold for an hour and then the call dropped.", "negative"),
    ("Our guide was funny and knew everything about the old town.", "positive"),
]

NAMES = [
    "Amara",
    "Ben",
    "Chen",
    "Dana",
    "Elif",
    "Farid",
    "Greta",
    "Hiro",
    "Ines",
    "Jonas",
    "Kemi",
    "Luca",
    "Maya",
    "Nikhil",
    "Olga",
    "Pablo",
    "Rosa",
    "Sami",
    "Tariq",
    "Uma",
    "Viktor",
    "Wen",
    "Yara",
    "Zoe",
]
ITEMS = [
    ("apples", "apple"),
    ("stickers", "sticker"),
    ("marbles", "marble"),
    ("pencils", "pencil"),
    ("stamps", "stamp"),
    ("cookies", "cookie"),
    ("books", "book"),
    ("seeds", "seed"),
    ("shells", "shell"),
]
EVENTS = [
    "the team meeting on Tuesday",
    "the office move next month",
    "the charity run in June",
    "the new opening hours of the workshop",
    "the delayed delivery of the chairs",
    "the volunteer day at the park",
    "the changes to the project deadline",
    "the quarterly budget review",
    "the book club's next meeting",
]

ROMAN = [
    (1000, "M"),
    (900, "CM"),
    (500, "D"),
    (400, "CD"),
    (100, "C"),
    (90, "XC"),
    (50, "L"),
    (40, "XL"),
    (10, "X"),
    (9, "IX"),
    (5, "V"),
    (4, "IV"),
    (1, "I"),
]

# ----------------------------------------------------------------------------------------------- helpers


def _roman(number: int) -> str:
    out = ""
    for value, letters in ROMAN:
        while number >= value:
            out += letters
            number -= value
    return out


def _divisors(number: int) -> list[int]:
    return [d for d in range(1, number + 1) if number % d == 0]


def _factorize(number: int) -> list[int]:
    factors, d = [], 2
    while d * d <= number:
        while number % d == 0:
            factors.append(d)
            number //= d
        d += 1
    if number > 1:
        factors.append(number)
    return factors


def _is_prime(number: int) -> bool:
    return number > 1 and _factorize(number) == [number]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _take_sentences(sentences: list[str], budget_chars: int, minimum: int = 1) -> list[str]:
    """The first sentences of a text that fit the character budget (at least `minimum`)."""
    chosen: list[str] = []
    size = 0
    for sentence in sentences:
        if len(chosen) >= minimum and size + len(sentence) + 1 > budget_chars:
            break
        chosen.append(sentence)
        size += len(sentence) + 1
    return chosen


# ----------------------------------------------------------------------------------------------- task families
# Each family: (rng, target response characters) -> (instruction, input, output).

Family = Callable[[random.Random, int], tuple[str, str, str]]


def explain_topic(rng: random.Random, target: int) -> tuple[str, str, str]:
    """A question about a topic, answered with as much of the topic text as the target allows."""
    topic = rng.choice(sorted(TOPICS))
    sentences = TOPICS[topic]
    if target < 160:
        asks = [
            f"Can you explain {topic} in just one sentence?",
            f"In a single sentence, what is meant by {topic}?",
            f"Give me a one-line summary of {topic}, please.",
        ]
        return rng.choice(asks), "", sentences[0]
    if target < 600:
        asks = [
            f"What should I know about {topic}? Keep it short.",
            f"Can you explain {topic} briefly, in plain words?",
            f"How would you describe {topic} to a friend who has never heard of it?",
            f"Tell me the basics of {topic} in a few sentences.",
        ]
        return rng.choice(asks), "", " ".join(_take_sentences(sentences, target, 2))
    asks = [
        f"Write a detailed explanation of {topic} for a beginner, with a short summary at the end.",
        f"I am preparing a talk about {topic}. Explain it thoroughly so I understand every step.",
        f"Explain {topic} in depth. Start with the basic idea, then go through the details.",
    ]
    body = _take_sentences(sentences[1:], target - len(sentences[0]) - 120, 3)
    paragraphs = [sentences[0]]
    for start in range(0, len(body), 3):
        paragraphs.append(" ".join(body[start : start + 3]))
    paragraphs.append(f"In short: {sentences[0][0].lower()}{sentences[0][1:]}")
    return rng.choice(asks), "", "\n\n".join(paragraphs)


TOPIC_GROUPS = [
    ["photosynthesis", "the water cycle", "plate tectonics", "the phases of the moon", "how vaccines work"],
    ["version control with git", "HTTP requests", "unit testing"],
    ["home composting", "household budgeting", "how a refrigerator works", "bicycle gears"],
    ["sleep and memory", "learning a new language", "the printing press"],
]


def study_notes(rng: random.Random, target: int) -> tuple[str, str, str]:
    """Notes on two related topics under headings: the long tail of natural-language answers."""
    first, second = rng.sample(rng.choice(TOPIC_GROUPS), 2)
    share = max(200, (target - 60) // 2)
    parts = []
    for topic in (first, second):
        parts.append(f"## {topic[0].upper()}{topic[1:]}\n\n" + " ".join(_take_sentences(TOPICS[topic], share, 3)))
    ask = rng.choice(
        [
            f"Write study notes on {first} and {second}, with a heading for each.",
            f"I have a quiz tomorrow on {first} and {second}. Can you write me revision notes with headings?",
        ]
    )
    return ask, "", "\n\n".join(parts)


def list_tips(rng: random.Random, target: int) -> tuple[str, str, str]:
    """N tips on a subject, N chosen from the target length."""
    subject = rng.choice(sorted(TIPS))
    tips = TIPS[subject]
    count = max(2, min(len(tips), round(target / 58)))
    picked = rng.sample(tips, count)
    if target > 700:
        lines = [f"Here are {count} practical tips for {subject}:", ""]
        lines += [f"{i}. {tip}" for i, tip in enumerate(picked, 1)]
        lines += ["", "You do not need to do all of them at once; start with two or three and build from there."]
        return f"Give me {count} tips for {subject}, as a numbered list.", "", "\n".join(lines)
    return f"Could you list {count} tips for {subject}?", "", "\n".join(f"- {tip}" for tip in picked)


def word_problem(rng: random.Random, target: int) -> tuple[str, str, str]:
    """An arithmetic word problem: the bare answer, or a worked solution for longer targets."""
    name, other = rng.sample(NAMES, 2)
    plural, singular = rng.choice(ITEMS)
    boxes, per_box, extra, given = rng.randint(3, 12), rng.randint(4, 15), rng.randint(1, 9), rng.randint(2, 20)
    total = boxes * per_box + extra
    left = total - given
    question = (
        f"{name} has {boxes} boxes with {per_box} {plural} in each box and {extra} loose {plural}. "
        f"{name} gives {given} {plural} to {other}. How many {plural} does {name} have left?"
    )
    if target < 80:
        return question + " Answer with just the number.", "", str(left)
    if target < 260:
        return question, "", f"{name} has {left} {plural} left: {boxes} × {per_box} + {extra} - {given} = {left}."
    per_day = rng.randint(2, 6)
    days = math.ceil(left / per_day)
    question += f" If {name} then uses {per_day} {plural} a day, how many days will they last?"
    steps = [
        "Let's work through it step by step.",
        f"1. {plural.capitalize()} in the boxes: {boxes} × {per_box} = {boxes * per_box}.",
        f"2. Add the loose ones: {boxes * per_box} + {extra} = {total}.",
        f"3. After giving {given} to {other}: {total} - {given} = {left} {plural}.",
        f"4. Using {per_day} a day: {left} ÷ {per_day} = {left / per_day:.2f}.",
        f"   Since a partly used day still counts, the {plural} last {days} days"
        + (f" (the last day has only {left - per_day * (days - 1)} {singular}s)." if left % per_day else "."),
        "",
        f"Answer: {name} has {left} {plural} left, enough for {days} days.",
    ]
    return question, "", "\n".join(steps)


def number_facts(rng: random.Random, target: int) -> tuple[str, str, str]:
    """Facts about an integer, computed; more facts for longer targets."""
    number = rng.randint(12, 999)
    digits = sum(int(d) for d in str(number))
    factors = _factorize(number)
    divisors = _divisors(number)
    facts = [
        f"{number} is {'even' if number % 2 == 0 else 'odd'}.",
        f"The sum of its digits is {digits}.",
        f"{number} is a prime number."
        if _is_prime(number)
        else f"Its prime factorization is {' × '.join(map(str, factors))}.",
        f"It has {len(divisors)} divisors: {_join([str(d) for d in divisors])}.",
        f"Its square is {number * number:,} and its cube is {number**3:,}.",
        f"In binary it is written {number:b}, and in hexadecimal {number:X}.",
        f"In Roman numerals it is {_roman(number)}.",
        f"{number} is {'divisible' if number % 3 == 0 else 'not divisible'} by 3, because its digit sum "
        f"{digits} is {'' if digits % 3 == 0 else 'not '}a multiple of 3.",
        f"Half of {number} is {number / 2:g}, and {number} minutes is {number // 60} hours and {number % 60} minutes.",
    ]
    if target < 90:
        kind = rng.choice(["binary", "roman", "prime"])
        if kind == "binary":
            return f"Convert the number {number} to binary. Reply with the digits only.", "", f"{number:b}"
        if kind == "roman":
            return f"How would the number {number} be written in Roman numerals?", "", _roman(number)
        answer = "Yes." if _is_prime(number) else f"No, {number} = " + " × ".join(map(str, factors)) + "."
        return f"Is {number} a prime number? Answer briefly.", "", answer
    chosen = _take_sentences(facts, int(target / 1.4), 2)  # digit-heavy text: ~3 characters a token
    return f"Tell me some interesting facts about the number {number}.", "", " ".join(chosen)


def conversion_table(rng: random.Random, target: int) -> tuple[str, str, str]:
    """A markdown conversion table; its number of rows follows the target length."""
    kind = rng.choice(["temperature", "distance", "weight"])
    rows = max(3, min(30, round((target / CHARS_PER_TOKEN - 40) / 17)))  # a row is ~17 tokens (one per digit)
    if kind == "temperature":
        start, step = rng.choice([-20, -10, 0]), rng.choice([2, 5])
        header = "| Celsius | Fahrenheit |\n|---:|---:|"
        lines = [f"| {c} °C | {c * 9 / 5 + 32:.1f} °F |" for c in range(start, start + rows * step, step)]
        ask = f"Make a table converting Celsius to Fahrenheit from {start} °C in steps of {step} degrees."
        note = "Formula: °F = °C × 9/5 + 32."
    elif kind == "distance":
        step = rng.choice([1, 5, 10])
        header = "| Miles | Kilometres |\n|---:|---:|"
        lines = [f"| {m} | {m * 1.609344:.2f} |" for m in range(step, step * (rows + 1), step)]
        ask = f"Create a miles-to-kilometres table for {step} to {step * rows} miles in steps of {step}."
        note = "1 mile = 1.609344 km."
    else:
        step = rng.choice([1, 2, 5])
        header = "| Pounds | Kilograms |\n|---:|---:|"
        lines = [f"| {p} lb | {p * 0.45359237:.2f} kg |" for p in range(step, step * (rows + 1), step)]
        ask = f"Give me a pounds-to-kilograms conversion table from {step} to {step * rows} lb."
        note = "1 lb = 0.45359237 kg."
    return ask, "", "\n".join([note, "", header, *lines])


def word_task(rng: random.Random, target: int) -> tuple[str, str, str]:
    """Short transformations of one sentence: reverse, count, sort, capitalize."""
    sentence = rng.choice(SENTENCES)
    words = sentence.rstrip(".").split()
    kind = rng.choice(["reverse", "count", "sort", "upper", "longest"])
    if kind == "reverse":
        return "Reverse the order of the words in this sentence.", sentence, " ".join(reversed(words))
    if kind == "count":
        return "How many words are in this sentence?", sentence, f"The sentence has {len(words)} words."
    if kind == "sort":
        ordered = sorted((w.strip(",").lower() for w in words), key=str.lower)
        return "Sort the words of this sentence alphabetically.", sentence, ", ".join(ordered)
    if kind == "upper":
        return "Rewrite this sentence in capital letters.", sentence, sentence.upper()
    longest = max((w.strip(",.'") for w in words), key=len)
    return (
        "Which is the longest word in this sentence?",
        sentence,
        (f"The longest word is '{longest}' ({len(longest)} letters)."),
    )


def sentiment(rng: random.Random, target: int) -> tuple[str, str, str]:
    """Classify a short review; a one-word or a one-sentence answer."""
    text, label = rng.choice(REVIEWS)
    if target < 40:
        return "Classify the sentiment of this review as positive, negative or neutral.", text, label
    reason = {
        "positive": "the writer praises what they experienced",
        "negative": "the writer describes a problem and is clearly unhappy",
        "neutral": "the writer reports facts without strong praise or complaint",
    }[label]
    return "What is the sentiment of this review? Explain briefly.", text, f"The sentiment is {label}: {reason}."


def summarize(rng: random.Random, target: int) -> tuple[str, str, str]:
    """Summarize a paragraph (the input is 3-6 topic sentences); the answer is one or two sentences."""
    topic = rng.choice(sorted(TOPICS))
    sentences = TOPICS[topic]
    start = rng.randint(0, max(0, len(sentences) - 6))
    paragraph = " ".join(_take_sentences(sentences[start : start + rng.randint(3, 5)], 520, 2))
    first = sentences[start].rstrip(".")
    summary = f"The text explains that {first[0].lower()}{first[1:]}."
    if target > 150:
        summary += f" It goes on to describe {len(paragraph.split('. '))} related points about {topic}."
    ask = rng.choice(
        [
            "Summarize the following text in one or two sentences.",
            "Give a short summary of this passage.",
            "What is the main point of this paragraph?",
        ]
    )
    return ask, paragraph, summary


def email(rng: random.Random, target: int) -> tuple[str, str, str]:
    """A short or longer email about an event to a named person."""
    name, sender = rng.sample(NAMES, 2)
    event = rng.choice(EVENTS)
    lines = [f"Subject: About {event}", "", f"Hi {name},", ""]
    body = [
        f"I wanted to give you a quick update about {event}.",
        "Everything is on track, and I have confirmed the details with the people involved.",
        "Could you let me know by Friday whether the plan works for you?",
        "If anything is unclear, I am happy to have a short call this week.",
        "I have also attached the notes from our last conversation for reference.",
        "Thank you again for your help with the preparations; it has made a real difference.",
    ]
    lines.append(" ".join(_take_sentences(body, max(80, target - 60), 2)))
    lines += ["", "Best regards,", sender]
    tone = rng.choice(["friendly", "polite", "short and professional"])
    return f"Write a {tone} email to {name} about {event}. Sign it as {sender}.", "", "\n".join(lines)


PY_FUNCTIONS = [
    (
        "checks whether a string is a palindrome, ignoring case and spaces",
        "def is_palindrome(text: str) -> bool:\n"
        '    """True if text reads the same backwards, ignoring case and spaces."""\n'
        '    cleaned = "".join(ch.lower() for ch in text if not ch.isspace())\n    return cleaned == cleaned[::-1]',
        "It first removes spaces and lowercases the text, then compares the cleaned string with its reverse.",
    ),
    (
        "returns the n-th Fibonacci number",
        'def fibonacci(n: int) -> int:\n    """The n-th Fibonacci number, with fibonacci(0) == 0."""\n'
        "    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
        "It keeps only the last two numbers of the sequence, so it runs in linear time and constant memory.",
    ),
    (
        "counts how often each word appears in a text",
        "from collections import Counter\n\n\ndef word_counts(text: str) -> dict[str, int]:\n"
        '    """How often each lowercase word occurs in text."""\n'
        '    words = [w.strip(".,!?;:").lower() for w in text.split()]\n'
        "    return dict(Counter(w for w in words if w))",
        "Punctuation at the edges of words is stripped so that 'Hello,' and 'hello' count as the same word.",
    ),
    (
        "merges two sorted lists into one sorted list",
        "def merge_sorted(left: list[int], right: list[int]) -> list[int]:\n"
        '    """One sorted list from two sorted lists, in linear time."""\n'
        "    merged: list[int] = []\n    i = j = 0\n    while i < len(left) and j < len(right):\n"
        "        if left[i] <= right[j]:\n            merged.append(left[i])\n            i += 1\n"
        "        else:\n            merged.append(right[j])\n            j += 1\n"
        "    merged.extend(left[i:])\n    merged.extend(right[j:])\n    return merged",
        "Two indexes walk through the lists; at each step the smaller head is appended, and whatever remains "
        "in either list is added at the end.",
    ),
    (
        "converts a temperature from Celsius to Fahrenheit and rounds it to one decimal place",
        'def celsius_to_fahrenheit(celsius: float) -> float:\n    """Celsius to Fahrenheit, rounded to 0.1."""\n'
        "    return round(celsius * 9 / 5 + 32, 1)",
        "The formula multiplies by 9/5 and adds 32; round keeps one decimal place.",
    ),
    (
        "groups a list of words by their first letter",
        "from collections import defaultdict\n\n\ndef group_by_initial(words: list[str]) -> dict[str, list[str]]:\n"
        '    """Words grouped by their lowercase first letter, each group in input order."""\n'
        "    groups: dict[str, list[str]] = defaultdict(list)\n    for word in words:\n"
        "        if word:\n            groups[word[0].lower()].append(word)\n    return dict(groups)",
        "A defaultdict creates each group the first time its letter appears; empty strings are skipped.",
    ),
    (
        "reads a CSV file and returns the average of one numeric column",
        "import csv\n\n\ndef column_average(path: str, column: str) -> float:\n"
        '    """Mean of a numeric column of a CSV file with a header row; ValueError if it has no values."""\n'
        '    total, count = 0.0, 0\n    with open(path, newline="") as handle:\n'
        '        for row in csv.DictReader(handle):\n            value = row.get(column, "").strip()\n'
        "            if value:\n                total += float(value)\n                count += 1\n"
        '    if count == 0:\n        raise ValueError(f"no values in column {column!r}")\n    return total / count',
        "csv.DictReader maps each row to the header names, empty cells are skipped, and an empty column raises a "
        "clear error instead of dividing by zero.",
    ),
    (
        "finds the first duplicate item in a list",
        "def first_duplicate(items: list[int]) -> int | None:\n"
        '    """The first item that appears a second time, or None."""\n'
        "    seen: set[int] = set()\n    for item in items:\n        if item in seen:\n            return item\n"
        "        seen.add(item)\n    return None",
        "A set remembers what has been seen, so each lookup is fast and the whole list is scanned only once.",
    ),
]


def python_function(rng: random.Random, target: int) -> tuple[str, str, str]:
    """A small Python function, with an explanation and a usage example for longer targets."""
    purpose, code, why = rng.choice(PY_FUNCTIONS)
    ask = f"Write a Python function that {purpose}."
    if target < 250:
        return ask + " Only the code, please.", "", f"```python\n{code}\n```"
    parts = [f"Here is a function that {purpose}:", "", f"```python\n{code}\n```", "", why]
    if target > 500:
        name = code.split("def ", 1)[1].split("(", 1)[0]
        parts += [
            "",
            "A few things to note:",
            "- The type hints document what the function expects and returns.",
            "- The docstring states the behaviour in one line, which is what most readers need.",
            f"- To check it, write a small unit test that calls `{name}` with a normal case and an edge case, "
            "such as an empty input.",
        ]
    return ask, "", "\n".join(parts)


def compare_numbers(rng: random.Random, target: int) -> tuple[str, str, str]:
    """Which is larger, a percentage or a fraction question: very short answers."""
    a, b = rng.randint(10, 99) / 10, rng.randint(10, 99) / 10
    if rng.random() < 0.5:
        return f"Which is larger, {a} or {b}?", "", f"{max(a, b)}" if a != b else "They are equal."
    percent, base = rng.choice([5, 10, 15, 20, 25, 30, 40, 75]), rng.randint(2, 40) * 10
    return f"What is {percent}% of {base}?", "", f"{percent * base / 100:g}"


FAMILIES: list[tuple[Family, int, int, float]] = [
    # (family, min target tokens, max target tokens, weight)
    (compare_numbers, 0, 12, 1.0),
    (sentiment, 0, 40, 1.0),
    (word_task, 0, 45, 1.5),
    (number_facts, 0, 200, 1.0),
    (word_problem, 0, 220, 1.5),
    (summarize, 15, 80, 1.2),
    (explain_topic, 15, 300, 2.5),
    (study_notes, 200, 450, 1.5),
    (list_tips, 25, 200, 1.2),
    (email, 40, 160, 1.0),
    (python_function, 40, 330, 1.0),
    (conversion_table, 60, 450, 0.8),
]


def make_rows(rows: int = ROWS, seed: int = SEED) -> list[Row]:
    """The benchmark rows: a log-normal response length target per row, then a family that can produce it."""
    rng = random.Random(seed)
    out: list[Row] = []
    seen: set[tuple[str, str]] = set()
    while len(out) < rows:
        tokens = min(MAX_TOKENS, max(MIN_TOKENS, round(rng.lognormvariate(math.log(MEDIAN_TOKENS), SIGMA))))
        fitting = [(f, w) for f, lo, hi, w in FAMILIES if lo <= tokens <= hi]
        family = rng.choices([f for f, _ in fitting], weights=[w for _, w in fitting])[0]
        instruction, text, output = family(rng, int(tokens * CHARS_PER_TOKEN))
        if (instruction, text) in seen:
            continue
        seen.add((instruction, text))
        out.append({"instruction": instruction, "input": text, "output": output})
    return out


def render(rows: list[Row]) -> str:
    """JSON lines, one row each, stable key order."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare the file on disk with a fresh generation")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    options = parser.parse_args()
    text = render(make_rows())
    if options.check:
        same = options.output.is_file() and options.output.read_text(encoding="utf-8") == text
        print("up to date" if same else f"{options.output} differs from a fresh generation")
        return 0 if same else 1
    options.output.write_text(text, encoding="utf-8")
    print(f"wrote {options.output} ({len(text):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
