"""Hand-written content for the demo datasets (original text written for this project)."""

from __future__ import annotations

# (instruction, input, output)
ALPACA_HANDWRITTEN: list[tuple[str, str, str]] = [
    (
        "Explain what photosynthesis is in two sentences.",
        "",
        "Photosynthesis is the process plants, algae and some bacteria use to turn light energy into chemical "
        "energy. Using sunlight, they combine carbon dioxide and water into glucose and release oxygen as a "
        "by-product.",
    ),
    (
        "What causes the seasons on Earth?",
        "",
        "The seasons come from the tilt of Earth's axis, about 23.4 degrees. As Earth orbits the Sun, each "
        "hemisphere spends part of the year tilted toward the Sun, getting more direct sunlight and longer days "
        "(summer), and part of the year tilted away, getting weaker light and shorter days (winter). The small "
        "change in Earth's distance from the Sun plays only a minor role.",
    ),
    ("Rewrite the sentence in the active voice.", "The cake was eaten by the children.", "The children ate the cake."),
    (
        "Rewrite the sentence in the active voice.",
        "The report will be reviewed by the committee next week.",
        "The committee will review the report next week.",
    ),
    (
        "Make this sentence more formal.",
        "Hey, can you send me that file real quick?",
        "Could you please send me the file at your earliest convenience?",
    ),
    (
        "Make this sentence more casual.",
        "We regret to inform you that the meeting has been postponed.",
        "Heads up: the meeting has been pushed back.",
    ),
    (
        "Summarize the following text in one sentence.",
        "The town library closed for six months while workers replaced its leaking roof and installed new heating. "
        "It reopened on Monday with a larger children's corner, twenty new computers and longer weekend hours.",
        "After a six-month renovation, the town library has reopened with a bigger children's area, new computers "
        "and longer weekend hours.",
    ),
    ("List the three primary colors of light.", "", "The three primary colors of light are red, green and blue."),
    (
        "Write a Python function that returns the factorial of n.",
        "",
        "def factorial(n: int) -> int:\n"
        '    """Return n! for a non-negative integer n."""\n'
        "    if n < 0:\n"
        '        raise ValueError("n must be non-negative")\n'
        "    result = 1\n"
        "    for k in range(2, n + 1):\n"
        "        result *= k\n"
        "    return result",
    ),
    (
        "Write a Python function that checks whether a string is a palindrome.",
        "",
        "def is_palindrome(text: str) -> bool:\n"
        '    """True if text reads the same forwards and backwards, ignoring case and spaces."""\n'
        '    cleaned = "".join(ch.lower() for ch in text if ch.isalnum())\n'
        "    return cleaned == cleaned[::-1]",
    ),
    (
        "What does HTTP stand for?",
        "",
        "HTTP stands for Hypertext Transfer Protocol. It is the protocol web browsers and servers use to request "
        "and deliver web pages and other resources.",
    ),
    (
        "What is the difference between weather and climate?",
        "",
        "Weather is the state of the atmosphere at a particular place and time: today's rain, wind or temperature. "
        "Climate is the average pattern of weather in a region over a long period, usually thirty years or more. "
        "In short, weather is what you get on a given day, and climate is what you expect over the years.",
    ),
    (
        "Give three tips for getting better sleep.",
        "",
        "1. Keep a regular schedule: go to bed and wake up at the same time every day, even on weekends.\n"
        "2. Make your bedroom dark, quiet and cool, and keep screens out of bed.\n"
        "3. Avoid caffeine in the afternoon and heavy meals late in the evening.",
    ),
    (
        "Explain what a prime number is.",
        "",
        "A prime number is a whole number greater than 1 whose only divisors are 1 and itself. For example, 2, 3, "
        "5, 7 and 11 are prime, while 9 is not, because it can be divided by 3.",
    ),
    (
        "Fix the grammar in this sentence.",
        "She don't like apples and she never eat them.",
        "She doesn't like apples, and she never eats them.",
    ),
    ("Translate 'Good morning' into Spanish.", "", "'Good morning' in Spanish is 'Buenos días'."),
    (
        "Translate 'Thank you' into German.",
        "",
        "'Thank you' in German is 'Danke'. A more emphatic form is 'Danke schön'.",
    ),
    ("Translate 'Good night' into French.", "", "'Good night' in French is 'Bonne nuit'."),
    (
        "What is the boiling point of water at sea level?",
        "",
        "At sea level, water boils at 100 degrees Celsius, which is 212 degrees Fahrenheit.",
    ),
    (
        "Name the planets of the solar system in order from the Sun.",
        "",
        "Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus and Neptune.",
    ),
    (
        "Explain what a variable is in programming.",
        "",
        "A variable is a name that refers to a value stored in the computer's memory. You can use the name to "
        "read the value or change it later. For example, in Python `count = 3` creates a variable called `count` "
        "holding the number 3, and `count = count + 1` updates it to 4.",
    ),
    (
        "Write a haiku about autumn.",
        "",
        "Crisp leaves drift and fall\nthe maple lets go of red\ncold wind hums softly",
    ),
    (
        "Suggest three names for a bakery that specializes in sourdough bread.",
        "",
        "1. Rise & Crust\n2. The Wild Yeast\n3. Slow Loaf Bakery",
    ),
    (
        "What is the main job of red blood cells?",
        "",
        "Red blood cells carry oxygen from the lungs to the rest of the body. They contain hemoglobin, a protein "
        "that binds oxygen, and they also help carry carbon dioxide back to the lungs to be breathed out.",
    ),
    (
        "Explain the difference between a list and a tuple in Python.",
        "",
        "Both hold an ordered sequence of items, but a list is mutable and a tuple is immutable. You can append, "
        "remove or change items in a list, written with square brackets like `[1, 2, 3]`. A tuple, written with "
        "parentheses like `(1, 2, 3)`, cannot be changed after it is created, which makes it useful for fixed "
        "groups of values and as a dictionary key.",
    ),
    (
        "What is an adjective? Give two examples.",
        "",
        "An adjective is a word that describes a noun, telling us what kind, how many or which one. For example, "
        "'tall' in 'a tall tree' and 'green' in 'a green door' are adjectives.",
    ),
    (
        "Describe the water cycle briefly.",
        "",
        "The Sun heats water in oceans, lakes and rivers, and it evaporates into water vapor. The vapor rises, "
        "cools and condenses into clouds. When the droplets grow heavy, they fall as precipitation such as rain or "
        "snow. The water collects in rivers, lakes, oceans and underground, and the cycle begins again.",
    ),
    (
        "Write a SQL query that selects all rows from a table named customers where the country is Canada.",
        "",
        "SELECT *\nFROM customers\nWHERE country = 'Canada';",
    ),
    (
        "What does the git clone command do?",
        "",
        "`git clone <url>` makes a full local copy of a remote Git repository: it downloads all files, branches "
        "and history into a new folder and sets up the remote as `origin`, so you can pull and push changes later.",
    ),
    (
        "Give an example of a metaphor and explain it.",
        "",
        "'Time is a thief' is a metaphor. It does not mean time literally steals, but it compares time to a thief "
        "to suggest that it quietly takes away moments of our lives before we notice.",
    ),
    (
        "Why is the sky blue?",
        "",
        "Sunlight contains all colors. When it passes through the atmosphere, the tiny gas molecules scatter "
        "shorter wavelengths much more strongly than longer ones, an effect called Rayleigh scattering. Blue light "
        "is scattered in every direction across the sky, so when we look up away from the Sun we see blue.",
    ),
    ("What is the largest ocean on Earth?", "", "The Pacific Ocean is the largest and deepest ocean on Earth."),
    ("Who wrote 'Romeo and Juliet'?", "", "'Romeo and Juliet' was written by William Shakespeare."),
    ("How many sides does a hexagon have?", "", "A hexagon has six sides."),
    (
        "What is the chemical symbol for gold?",
        "",
        "The chemical symbol for gold is Au, from its Latin name 'aurum'.",
    ),
    (
        "Explain what an API is to a beginner.",
        "",
        "An API, or application programming interface, is a set of rules that lets one program ask another "
        "program for data or services. Think of it like a restaurant menu: the menu lists what you can order and "
        "how to ask for it, and the kitchen does the work without you needing to know how. A weather app, for "
        "example, uses a weather service's API to get the forecast.",
    ),
    (
        "Write a short thank-you note to a colleague who helped with a project.",
        "",
        "Hi Sam,\n\nThank you for all your help on the launch project. Your careful testing caught problems we "
        "would have missed, and your calm approach kept the whole team on track. I really appreciated working "
        "with you.\n\nBest regards,\nAlex",
    ),
    (
        "Classify the following animals as mammals or birds.",
        "eagle, dolphin, penguin, bat, sparrow",
        "Mammals: dolphin, bat.\nBirds: eagle, penguin, sparrow.",
    ),
    (
        "Write a JavaScript function that adds two numbers.",
        "",
        "function add(a, b) {\n  return a + b;\n}",
    ),
    (
        "What is the purpose of a README file?",
        "",
        "A README file is the first document people see in a project. It explains what the project does, how to "
        "install and use it, and often how to contribute or where to get help.",
    ),
    (
        "Explain the difference between 'affect' and 'effect'.",
        "",
        "In most sentences, 'affect' is a verb meaning to influence something, while 'effect' is a noun meaning "
        "the result of a change. For example: 'The rain affected the game' and 'The rain had a big effect on the "
        "game.'",
    ),
    (
        "Create a simple weekly workout plan for a beginner.",
        "",
        "Monday: 20-minute brisk walk and light stretching.\n"
        "Tuesday: Bodyweight circuit: 10 squats, 8 push-ups (on knees if needed), 20-second plank; repeat 3 times.\n"
        "Wednesday: Rest or gentle yoga.\n"
        "Thursday: 25-minute walk or easy bike ride.\n"
        "Friday: Repeat Tuesday's circuit.\n"
        "Saturday: A longer, relaxed walk or swim.\n"
        "Sunday: Rest.",
    ),
    (
        "Write a regular expression that matches a five-digit US ZIP code.",
        "",
        r"^\d{5}$" + "\n\nIt matches exactly five digits from the start (^) to the end ($) of the string.",
    ),
    (
        "What is the approximate speed of light in a vacuum?",
        "",
        "Light travels at about 299,792 kilometres per second in a vacuum, often rounded to 300,000 km/s.",
    ),
    (
        "Explain recursion using a simple example.",
        "",
        "Recursion is when a function solves a problem by calling itself on a smaller version of the same "
        "problem, until it reaches a simple base case. For example, to count down from n: print n, then count down "
        "from n - 1, and stop when n reaches 0.\n\n"
        "def countdown(n):\n    if n == 0:\n        return\n    print(n)\n    countdown(n - 1)",
    ),
    (
        "Give two advantages of public transportation.",
        "",
        "1. It reduces traffic congestion and air pollution, because one bus or train carries many people.\n"
        "2. It is usually cheaper for riders than owning, fuelling and parking a car.",
    ),
    (
        "Rewrite this sentence to be more concise.",
        "At this point in time, we are currently in the process of reviewing the applications.",
        "We are reviewing the applications.",
    ),
    (
        "List five fruits that are high in vitamin C.",
        "",
        "Oranges, kiwis, strawberries, guavas and papayas.",
    ),
    (
        "What is the difference between RAM and storage?",
        "",
        "RAM is fast, temporary memory that holds the programs and data a computer is using right now; it is "
        "cleared when the power goes off. Storage, such as an SSD or hard drive, is slower but keeps files and "
        "programs permanently, even when the computer is turned off.",
    ),
    (
        "Explain what inflation means in economics.",
        "",
        "Inflation is the general rise in prices across an economy over time. When inflation is 3% a year, "
        "something that costs $100 today costs about $103 a year later, so each unit of money buys a little less.",
    ),
    (
        "Write a Python list comprehension that squares the numbers from 1 to 10.",
        "",
        "squares = [n ** 2 for n in range(1, 11)]",
    ),
    ("What is the longest river in South America?", "", "The Amazon is the longest river in South America."),
    (
        "Which gas do plants absorb from the air for photosynthesis?",
        "",
        "Plants absorb carbon dioxide (CO2) from the air.",
    ),
    (
        "Write an email subject line announcing a team lunch on Friday.",
        "",
        "Team lunch this Friday at noon - join us!",
    ),
    (
        "Explain what a leap year is.",
        "",
        "A leap year has 366 days instead of 365, with an extra day on 29 February. It keeps the calendar in step "
        "with Earth's orbit, which takes about 365.24 days. A year is a leap year if it is divisible by 4, except "
        "century years, which must also be divisible by 400; so 2000 was a leap year but 1900 was not.",
    ),
    (
        "What does CPU stand for, and what does it do?",
        "",
        "CPU stands for central processing unit. It is the part of a computer that carries out program "
        "instructions: it does arithmetic, makes comparisons and moves data between memory and other devices.",
    ),
    (
        "Turn this sentence into a question.",
        "The museum opens at nine o'clock.",
        "What time does the museum open?",
    ),
    ("Describe a cat in three adjectives.", "", "Curious, graceful and independent."),
    (
        "What is the plural of 'mouse'?",
        "",
        "The plural of 'mouse' is 'mice'. For computer mice, both 'mice' and 'mouses' are used, but 'mice' is "
        "more common.",
    ),
    (
        "Explain the rule of thirds in photography.",
        "",
        "The rule of thirds divides the frame into a three-by-three grid with two horizontal and two vertical "
        "lines. Placing the subject along those lines or at their intersections, instead of dead centre, usually "
        "makes a photo feel more balanced and interesting.",
    ),
    (
        "Write a shell command that counts the lines in a file called data.txt.",
        "",
        "wc -l data.txt\n\nTo print only the number, without the file name, use `wc -l < data.txt`.",
    ),
    (
        "How do you reverse a list in Python?",
        "",
        "Call `items.reverse()` to reverse the list in place, or use `items[::-1]` to get a reversed copy and "
        "leave the original unchanged.",
    ),
    ("What is the ASCII code of the capital letter A?", "", "The capital letter A has ASCII code 65."),
    (
        "Give a one-sentence definition of democracy.",
        "",
        "Democracy is a system of government in which power belongs to the people, who rule either directly or "
        "through representatives they elect in free and fair elections.",
    ),
    (
        "What is the Pythagorean theorem?",
        "",
        "In a right-angled triangle, the square of the hypotenuse equals the sum of the squares of the other two "
        "sides: a^2 + b^2 = c^2. For example, a triangle with sides 3 and 4 has a hypotenuse of 5, because "
        "9 + 16 = 25.",
    ),
    ("Name three renewable sources of energy.", "", "Solar power, wind power and hydroelectric power."),
    (
        "What is the difference between a virus and a bacterium?",
        "",
        "Bacteria are single-celled living organisms that can reproduce on their own; many are harmless or even "
        "helpful, and bacterial infections can often be treated with antibiotics. Viruses are much smaller, are "
        "not cells and can only reproduce inside the cells of a host. Antibiotics do not work against viruses.",
    ),
    (
        "Write a limerick about a forgetful robot.",
        "",
        "A robot who lived in a shed\nhad a memory chip in its head,\nbut it lost every list,\n"
        "every task that it missed,\nso it napped in the toolbox instead.",
    ),
    (
        "Write a Python function that counts the words in a sentence.",
        "",
        "def count_words(sentence: str) -> int:\n"
        '    """Number of whitespace-separated words in sentence."""\n'
        "    return len(sentence.split())",
    ),
    (
        "What is machine learning, in simple terms?",
        "",
        "Machine learning is a way of building computer programs that learn patterns from examples instead of "
        "following rules written by hand. For instance, after seeing thousands of emails labelled 'spam' or "
        "'not spam', a model can learn to sort new emails on its own.",
    ),
    (
        "Explain the difference between HTTP and HTTPS.",
        "",
        "HTTPS is HTTP sent over an encrypted connection (TLS). With plain HTTP, anyone on the network path can "
        "read or alter the data; HTTPS encrypts it and lets the browser verify it is talking to the real website.",
    ),
    (
        "Suggest three ways to reduce food waste at home.",
        "",
        "1. Plan meals and write a shopping list, so you buy only what you will use.\n"
        "2. Store food properly and move older items to the front of the fridge.\n"
        "3. Turn leftovers into new dishes, such as soups, stir-fries or frittatas.",
    ),
    (
        "What is the smallest prime number?",
        "",
        "The smallest prime number is 2. It is also the only even prime number.",
    ),
    (
        "Write an encouraging sentence for someone starting to learn the piano.",
        "",
        "Every great pianist once played their first clumsy scale, so be patient with yourself: ten minutes of "
        "practice a day adds up faster than you think.",
    ),
    (
        "Explain what a JSON file is.",
        "",
        'A JSON file stores data as text using JavaScript Object Notation: objects in curly braces with "key": '
        "value pairs, lists in square brackets, and values such as strings, numbers, true, false and null. It is "
        "easy for people to read and for almost every programming language to parse.",
    ),
    (
        "Explain why ice floats on water.",
        "",
        "When water freezes, its molecules arrange themselves into a hexagonal crystal that holds them slightly "
        "farther apart than in liquid water. That makes ice about 9% less dense than water, so it floats.",
    ),
    (
        "Write a Python function that returns the largest number in a list.",
        "",
        "def largest(numbers: list[float]) -> float:\n"
        '    """The largest value in a non-empty list."""\n'
        "    if not numbers:\n"
        '        raise ValueError("the list is empty")\n'
        "    best = numbers[0]\n"
        "    for value in numbers[1:]:\n"
        "        if value > best:\n"
        "            best = value\n"
        "    return best",
    ),
    (
        "What is the difference between a noun and a verb?",
        "",
        "A noun names a person, place, thing or idea, such as 'teacher', 'river' or 'freedom'. A verb describes "
        "an action or a state, such as 'run', 'think' or 'is'.",
    ),
]

# (system, instruction, output)
ALPACA_WITH_SYSTEM: list[tuple[str, str, str]] = [
    (
        "You are a concise assistant. Answer in one sentence.",
        "What is a black hole?",
        "A black hole is a region of space where gravity is so strong that nothing, not even light, can escape it.",
    ),
    (
        "You are a friendly tutor for young children.",
        "Why do leaves change color in autumn?",
        "In summer, leaves are full of a green helper called chlorophyll that makes food from sunlight. In "
        "autumn the days get shorter, the tree stops making chlorophyll, and the green fades away, so the yellow "
        "and orange colors that were hiding underneath finally get their turn to shine!",
    ),
    ("Reply with the answer only, no explanation.", "What is 7 times 8?", "56"),
    (
        "You are a helpful assistant who always answers in a numbered list.",
        "How do I boil an egg?",
        "1. Put the egg in a pan and cover it with cold water.\n"
        "2. Bring the water to a boil.\n"
        "3. Lower the heat and simmer: about 6 minutes for a soft yolk, 10 minutes for hard-boiled.\n"
        "4. Move the egg into cold water for a minute, then peel.",
    ),
    (
        "You are a careful code reviewer.",
        "Is there a problem with this Python line: `if x = 5: print(x)`?",
        "Yes. `=` is assignment, so `if x = 5:` is a syntax error. To compare, use `==`: `if x == 5: print(x)`.",
    ),
    (
        "You answer as a polite museum guide.",
        "What is the Mona Lisa?",
        "The Mona Lisa is a portrait painted by Leonardo da Vinci in the early sixteenth century. It hangs in the "
        "Louvre in Paris and is famous for the sitter's subtle smile. Please enjoy it from behind the rope!",
    ),
    (
        "Reply with the answer only, no explanation.",
        "What is the capital of Japan?",
        "Tokyo",
    ),
    (
        "You are a concise assistant. Answer in one sentence.",
        "What is an atom?",
        "An atom is the smallest unit of a chemical element, made of a nucleus of protons and neutrons surrounded "
        "by electrons.",
    ),
]

# (history pairs, instruction, output)
ALPACA_WITH_HISTORY: list[tuple[list[list[str]], str, str]] = [
    (
        [["What is the tallest mountain in the world?", "Mount Everest, at about 8,849 metres above sea level."]],
        "Which countries is it in?",
        "Mount Everest sits on the border between Nepal and China, in the Himalayas.",
    ),
    (
        [
            [
                "Can you recommend a good first programming language?",
                "Python is a great first language: its syntax is readable and it is used for everything from "
                "websites to data analysis.",
            ]
        ],
        "Where can I start learning it for free?",
        "The official Python tutorial at docs.python.org is free and thorough. Many public libraries and online "
        "courses also offer free beginner material, and practising small programs every day helps a lot.",
    ),
    (
        [["Write a Python function that doubles a number.", "def double(x):\n    return x * 2"]],
        "Now make it triple the number instead.",
        "def triple(x):\n    return x * 3",
    ),
    (
        [["I have 3 apples and buy 5 more. How many do I have?", "You have 8 apples."]],
        "If I eat 2 of them, how many are left?",
        "You have 6 apples left.",
    ),
    (
        [
            ["What is a synonym for 'happy'?", "'Joyful' is a good synonym for 'happy'."],
            ["And an antonym?", "'Sad' is a common antonym for 'happy'."],
        ],
        "Use both words in one sentence.",
        "She felt joyful in the morning, but by evening the news had left her sad.",
    ),
    (
        [["How many days are in a week?", "There are 7 days in a week."]],
        "How many days are in 5 weeks?",
        "There are 35 days in 5 weeks, because 5 x 7 = 35.",
    ),
]

# Multi-turn conversations: list of (user, assistant) turns, optionally with a system prompt.
CONVERSATIONS: list[tuple[str | None, list[tuple[str, str]]]] = [
    (
        None,
        [
            (
                "I want to start running. Any advice?",
                "Start slowly: alternate one minute of jogging with two "
                "minutes of walking for about 20 minutes, three times a week. Good shoes and rest days matter more "
                "than speed at the beginning.",
            ),
            (
                "How long until I can run 5 km?",
                "Many beginners can run 5 km without stopping after about eight "
                "to ten weeks of steady practice, gradually making the jogging intervals longer.",
            ),
        ],
    ),
    (
        None,
        [
            (
                "What's the difference between baking soda and baking powder?",
                "Baking soda is pure sodium "
                "bicarbonate and needs an acid in the recipe, such as buttermilk or lemon juice, to make it rise. "
                "Baking powder already contains baking soda plus a dry acid, so it only needs moisture and heat.",
            ),
            (
                "Can I swap one for the other?",
                "Not one-for-one. You can replace 1 teaspoon of baking powder with "
                "about a quarter teaspoon of baking soda plus an acid, but it is easier to use what the recipe asks "
                "for.",
            ),
        ],
    ),
    (
        "You are a patient programming tutor.",
        [
            (
                "What does a for loop do?",
                "A for loop repeats a block of code once for each item in a sequence. "
                "For example, `for name in ['Ana', 'Ben']: print(name)` prints each name on its own line.",
            ),
            (
                "How do I loop over numbers from 1 to 5?",
                "Use `range`: `for n in range(1, 6): print(n)`. The end "
                "value is not included, so `range(1, 6)` gives 1, 2, 3, 4 and 5.",
            ),
            (
                "And counting down?",
                "Give `range` a negative step: `for n in range(5, 0, -1): print(n)` prints 5, 4, 3, 2, 1.",
            ),
        ],
    ),
    (
        None,
        [
            (
                "Why do cats purr?",
                "Cats often purr when they are relaxed and content, but they also purr when "
                "stressed, hurt or giving birth, so purring seems to be a way of calming themselves as well as "
                "communicating.",
            ),
            (
                "Do big cats purr too?",
                "Some do. Cheetahs, cougars and lynxes purr, while lions and tigers "
                "cannot purr continuously the way house cats do; instead they can roar.",
            ),
        ],
    ),
    (
        None,
        [
            (
                "Can you help me write a birthday message for my grandmother?",
                'Of course! Here is one: "Happy '
                "birthday, Grandma! Thank you for the stories, the cookies and all the love. I hope your day is as "
                'warm and wonderful as you are."',
            ),
            (
                "Make it a bit shorter.",
                '"Happy birthday, Grandma! Thank you for all your love - I hope your day is as wonderful as you are."',
            ),
        ],
    ),
    (
        "You are a concise assistant.",
        [
            (
                "What is the Great Wall of China?",
                "A series of fortifications built across northern China over "
                "many centuries to protect against invasions.",
            ),
            (
                "Can you see it from space with the naked eye?",
                "Not from the Moon, and only with great difficulty, "
                "if at all, from low Earth orbit; it is long but very narrow.",
            ),
        ],
    ),
    (
        None,
        [
            (
                "How do I make a cup of green tea?",
                "Heat water until it is hot but not boiling, around 75 to 80 "
                "degrees Celsius. Pour it over one teaspoon of leaves or a tea bag and steep for two to three "
                "minutes.",
            ),
            (
                "Why not boiling water?",
                "Boiling water can scorch the delicate leaves and pull out more bitter "
                "compounds, so green tea tastes smoother when brewed cooler.",
            ),
        ],
    ),
    (
        None,
        [
            (
                "What is a budget?",
                "A budget is a plan for how you will spend and save your money over a period, "
                "such as a month, based on what you expect to earn.",
            ),
            (
                "How do I start one?",
                "List your monthly income, then your fixed costs like rent and bills. Decide "
                "how much goes to savings, and split what is left between groceries, transport and fun. Track your "
                "spending for a month and adjust.",
            ),
        ],
    ),
    (
        None,
        [
            (
                "Recommend a houseplant that is hard to kill.",
                "A snake plant is a great choice: it tolerates low "
                "light, needs water only every two to three weeks and forgives neglect.",
            ),
            (
                "Is it safe around pets?",
                "Snake plants are mildly toxic to cats and dogs if chewed, so keep it out "
                "of reach. A spider plant is a pet-safe alternative that is also easy to care for.",
            ),
        ],
    ),
    (
        "You are a friendly geography quiz host.",
        [
            ("Ask me a question!", "Here you go: which is the largest desert in Africa?"),
            (
                "The Sahara?",
                "Correct! The Sahara is the largest hot desert in the world, covering much of North Africa.",
            ),
        ],
    ),
    (
        None,
        [
            (
                "What does 'procrastinate' mean?",
                "To procrastinate is to delay or put off doing something you "
                "should do, usually because it feels unpleasant or difficult.",
            ),
            ("Use it in a sentence.", "I tend to procrastinate on my taxes until the very last week."),
        ],
    ),
    (
        None,
        [
            ("How many bones are in the adult human body?", "An adult human body usually has 206 bones."),
            (
                "And in a newborn baby?",
                "A newborn has around 270 to 300 bones or bony parts; many of them fuse together as the child grows.",
            ),
        ],
    ),
    (
        "You are a helpful cooking assistant.",
        [
            (
                "I have eggs, cheese and spinach. What can I cook?",
                "A spinach and cheese omelette is quick: whisk "
                "two or three eggs, pour them into a buttered pan, add a handful of spinach and some grated cheese, "
                "then fold once the eggs are set.",
            ),
            (
                "Any other idea?",
                "You could bake a simple frittata: mix the eggs, spinach and cheese, pour into an "
                "oven-safe pan and bake at about 180 degrees Celsius for 15 to 20 minutes.",
            ),
        ],
    ),
    (
        None,
        [
            (
                "What is the difference between a lake and a pond?",
                "There is no strict scientific rule, but lakes "
                "are generally larger and deeper. In a pond, sunlight usually reaches the bottom everywhere, so "
                "plants can grow across it.",
            ),
            (
                "Which is bigger, a sea or an ocean?",
                "An ocean. Seas are smaller parts of oceans, usually partly "
                "enclosed by land, like the Mediterranean Sea.",
            ),
        ],
    ),
    (
        None,
        [
            (
                "Can you explain what a spreadsheet is?",
                "A spreadsheet is a grid of cells arranged in rows and "
                "columns, where you can store numbers and text and write formulas that calculate with them, like "
                "adding up a column of expenses.",
            ),
            ("How would I add up cells A1 to A10?", "Type `=SUM(A1:A10)` into an empty cell and press Enter."),
        ],
    ),
    (
        None,
        [
            (
                "What should I pack for a day hike?",
                "Water, snacks, a map or offline map, sunscreen, a hat, a "
                "light rain jacket, a small first-aid kit and a charged phone.",
            ),
            (
                "What if it gets cold?",
                "Add a warm layer such as a fleece and a pair of gloves; temperatures drop "
                "quickly at higher altitudes and after sunset.",
            ),
        ],
    ),
]

# (question, answer, follow-up question, follow-up answer) for OpenAI-messages rows.
FOLLOW_UPS: list[tuple[str, str, str, str]] = [
    (
        "What is a noun?",
        "A noun is a word that names a person, place, thing or idea.",
        "Give me three examples.",
        "'Teacher', 'London' and 'happiness' are all nouns.",
    ),
    (
        "What is gravity?",
        "Gravity is the force that pulls objects with mass toward each other. On Earth, it pulls everything toward "
        "the ground and gives objects their weight.",
        "Why doesn't the Moon fall onto Earth?",
        "It is falling, in a sense, but it also moves sideways fast enough that it keeps missing: its speed and "
        "Earth's pull balance into a stable orbit.",
    ),
    (
        "What is a synonym?",
        "A synonym is a word that means the same or nearly the same as another word.",
        "What is a synonym for 'big'?",
        "'Large' is a common synonym for 'big'; 'huge' and 'enormous' are stronger ones.",
    ),
    (
        "What is a fraction?",
        "A fraction represents a part of a whole, written as one number over another, like 3/4: the bottom "
        "number says how many equal parts the whole has, and the top says how many of them you take.",
        "Which is bigger, 2/3 or 3/5?",
        "2/3 is bigger. As decimals, 2/3 is about 0.667 and 3/5 is 0.6.",
    ),
    (
        "What is a verb?",
        "A verb is a word that expresses an action or a state of being.",
        "Is 'seem' a verb?",
        "Yes. 'Seem' is a linking verb that describes a state, as in 'She seems tired.'",
    ),
    (
        "What is a function in programming?",
        "A function is a named, reusable block of code that takes inputs, called arguments, does some work and "
        "can return a result.",
        "Show me a tiny example in Python.",
        "def greet(name):\n    return f\"Hello, {name}!\"\n\nCalling `greet('Mia')` returns 'Hello, Mia!'.",
    ),
    (
        "What is an ecosystem?",
        "An ecosystem is a community of living things, such as plants, animals and microbes, together with their "
        "physical environment, all interacting as a system.",
        "Give an example.",
        "A pond is an ecosystem: algae and plants make food from sunlight, insects and fish eat them, and "
        "bacteria break down dead material into nutrients again.",
    ),
    (
        "What is a simile?",
        "A simile compares two different things using 'like' or 'as'.",
        "Give me an example.",
        "'Her smile was as bright as the sun' is a simile.",
    ),
    (
        "What is compound interest?",
        "Compound interest is interest calculated on both the original amount and the interest already added, "
        "so the balance grows faster over time.",
        "If I save $100 at 10% a year, compounded yearly, how much do I have after two years?",
        "$121. After one year you have $110, and 10% of $110 is $11, giving $121.",
    ),
    (
        "What is an island?",
        "An island is a piece of land completely surrounded by water and smaller than a continent.",
        "What is the largest island in the world?",
        "Greenland is the largest island in the world (Australia is larger but counts as a continent).",
    ),
    (
        "What is a palindrome?",
        "A palindrome is a word, number or phrase that reads the same forwards and backwards.",
        "Give me a few examples.",
        "'Level', 'racecar' and the number 12321 are palindromes.",
    ),
    (
        "What does a thermometer measure?",
        "A thermometer measures temperature.",
        "What is normal human body temperature?",
        "Normal body temperature is about 37 degrees Celsius (98.6 degrees Fahrenheit), varying slightly from "
        "person to person and over the day.",
    ),
    (
        "What is a haiku?",
        "A haiku is a short Japanese form of poetry with three lines of five, seven and five syllables.",
        "Write one about the sea.",
        "Gray waves fold and break\nsalt wind carries gull voices\nthe tide pulls them home",
    ),
    (
        "What is an antonym?",
        "An antonym is a word that means the opposite of another word.",
        "What is the antonym of 'generous'?",
        "'Stingy' or 'selfish' are antonyms of 'generous'.",
    ),
    (
        "What is a continent?",
        "A continent is one of Earth's very large landmasses. There are usually said to be seven: Africa, "
        "Antarctica, Asia, Australia (Oceania), Europe, North America and South America.",
        "Which one is the largest?",
        "Asia is the largest continent, both in area and in population.",
    ),
]

# Hand-written preference prompts: (prompt, chosen, rejected); rejected answers are wrong, rude, lazy or off-topic.
PREFERENCE_HANDWRITTEN: list[tuple[str, str, str]] = [
    (
        "How many legs does a spider have?",
        "A spider has eight legs.",
        "Spiders have six legs, like all insects.",
    ),
    (
        "Can you explain what a noun is?",
        "A noun is a word that names a person, place, thing or idea, such as 'doctor', 'Paris' or 'kindness'.",
        "Seriously? You should have learned that in primary school.",
    ),
    (
        "What is the freezing point of water in Fahrenheit?",
        "Water freezes at 32 degrees Fahrenheit (0 degrees Celsius).",
        "Water freezes at 0 degrees Fahrenheit.",
    ),
    (
        "Give me a tip for staying focused while studying.",
        "Work in short, timed blocks: study for 25 minutes with your phone in another room, then take a "
        "5-minute break. Repeating this keeps your attention fresh.",
        "Just focus harder.",
    ),
    (
        "Who painted the ceiling of the Sistine Chapel?",
        "Michelangelo painted the ceiling of the Sistine Chapel between 1508 and 1512.",
        "I think it was Vincent van Gogh.",
    ),
    (
        "How do I make my code easier to read?",
        "Use clear, descriptive names, keep functions short and focused on one task, format the code "
        "consistently and add comments that explain why something is done, not what the code already says.",
        "Honestly, nobody reads code anyway, so don't bother.",
    ),
    (
        "What is the square root of 144?",
        "The square root of 144 is 12, because 12 x 12 = 144.",
        "The square root of 144 is 14.",
    ),
    (
        "What is a good way to learn new vocabulary in a foreign language?",
        "Learn words in context rather than as isolated lists, review them with spaced repetition flashcards, "
        "and use new words in your own sentences, out loud or in writing, within a day of learning them.",
        "My favourite pizza topping is mushrooms.",
    ),
    (
        "Which planet is known as the Red Planet?",
        "Mars is known as the Red Planet because iron oxide, or rust, in its soil gives it a reddish color.",
        "Jupiter is the Red Planet.",
    ),
    (
        "Can you summarize why exercise is good for health?",
        "Regular exercise strengthens the heart and muscles, helps control weight and blood pressure, improves "
        "sleep and mood, and lowers the risk of diseases such as type 2 diabetes.",
        "It's good. Next question.",
    ),
    (
        "How many minutes are in three hours?",
        "There are 180 minutes in three hours, because 3 x 60 = 180.",
        "There are 300 minutes in three hours.",
    ),
    (
        "Please explain how to tie a simple knot for a shoelace.",
        "Cross the laces and tuck one under to make a simple knot. Make a loop with one lace, wrap the other "
        "lace around it, push that lace through the small gap to form a second loop, and pull both loops tight.",
        "Buy shoes with velcro instead.",
    ),
]

# Original plain-text paragraphs for the pre-training demo.
PT_PARAGRAPHS: list[str] = [
    "The water cycle has no beginning and no end. Sunlight warms the surface of the sea, and some of the water "
    "rises as invisible vapor. High above, the air is colder, so the vapor condenses into tiny droplets that "
    "gather as clouds. When the droplets merge and grow heavy, they fall as rain or snow, and rivers carry the "
    "water back toward the sea.",
    "Tides are caused mainly by the pull of the Moon. The side of Earth facing the Moon is pulled a little more "
    "strongly than the center of the planet, and the far side a little less, so the oceans bulge on both sides. "
    "As Earth turns, most coasts pass through two high tides and two low tides roughly every day.",
    "A honeybee colony works like a single organism. The queen lays the eggs, the drones exist to mate, and "
    "thousands of female workers do everything else: they clean the cells, feed the larvae, build wax comb, "
    "guard the entrance and fly out to collect nectar and pollen. A worker's job changes as she ages, and the "
    "oldest bees are the foragers.",
    "Sourdough bread rises without packaged yeast. Instead, the baker keeps a starter, a paste of flour and "
    "water where wild yeasts and lactic acid bacteria live together. The yeasts make the gas that lifts the "
    "dough, and the bacteria give the bread its gentle sour taste. Because the process is slow, a loaf can take "
    "a whole day from mixing to baking.",
    "Before electric beacons, lighthouse keepers climbed the stairs every evening to light the lamp and wind the "
    "clockwork that turned the lens. Each lighthouse flashed in its own rhythm, so sailors could tell one tower "
    "from another in the dark. Today most lighthouses are automatic, but many still stand as landmarks on rocky "
    "coasts.",
    "The printing press with movable metal type, developed in Europe in the fifteenth century, changed how ideas "
    "spread. Books that once took scribes months to copy could be produced by the hundreds. Prices fell, more "
    "people learned to read, and news, science and arguments travelled farther and faster than ever before.",
    "Compost is what happens when kitchen scraps and garden waste are given time, air and moisture. Bacteria "
    "and fungi break the material down, worms and insects join in, and the pile slowly turns into dark, "
    "crumbly soil. A good heap mixes green material, such as vegetable peels, with brown material, such as dry "
    "leaves or cardboard.",
    "The Moon does not make its own light; it reflects sunlight. As it orbits Earth, we see different amounts "
    "of its sunlit half. At new moon the lit side faces away from us, at full moon it faces us completely, and "
    "in between we see crescents and half moons. A full cycle of phases takes about twenty-nine and a half "
    "days.",
    "A volcano forms where molten rock from deep inside Earth reaches the surface. Some volcanoes erupt "
    "quietly, with rivers of lava flowing down their slopes. Others explode violently, throwing ash high into "
    "the sky, because their thick magma traps gas until the pressure bursts out. Many volcanoes lie along the "
    "edges of tectonic plates.",
    "The human heart is a muscle about the size of a fist. It beats around seventy times a minute at rest, "
    "pushing blood through the lungs to pick up oxygen and then around the body to deliver it. Over a lifetime "
    "it beats billions of times without ever taking a real rest.",
    "A public library is one of the few places where anyone may walk in, stay as long as they like and leave "
    "with something valuable at no cost. Besides books, many libraries lend films, music, tools and even "
    "musical instruments, and they offer quiet rooms, internet access and classes for every age.",
    "A moving bicycle is surprisingly stable. When it begins to lean, the rider turns the front wheel slightly "
    "in the same direction, which steers the wheels back under the center of mass. The shape of the fork helps "
    "as well, making the front wheel turn into a lean on its own. That is why a bicycle is easier to balance at "
    "speed than when it is almost still.",
    "Lines of latitude run east and west around the globe and measure how far a place is north or south of the "
    "equator. Lines of longitude run from pole to pole and measure how far east or west a place is from the "
    "prime meridian, which passes through Greenwich in London. Together they give every spot on Earth a unique "
    "address.",
    "People kept time long before clocks. Sundials followed the shadow of a stick across the day, water clocks "
    "measured the slow drip from one vessel into another, and candles were marked with rings that burned away "
    "hour by hour. Mechanical clocks with gears and escapements appeared in medieval Europe and were often "
    "placed in church towers so a whole town could hear the bells.",
    "A rainbow appears when sunlight shines into falling raindrops behind you. Each drop bends the light as it "
    "enters, reflects it off the back of the drop and bends it again as it leaves. Because each color bends by "
    "a slightly different amount, the white light spreads into a band of red, orange, yellow, green, blue and "
    "violet.",
    "Glaciers are rivers of ice that move under their own weight. They form where more snow falls in winter "
    "than melts in summer, so the layers pile up and slowly compress into ice. As a glacier creeps downhill, "
    "it grinds the rock beneath it and carves deep U-shaped valleys.",
    "Coral reefs are built by tiny animals called polyps, which make hard skeletons of calcium carbonate. Over "
    "thousands of years, these skeletons pile up into huge structures that shelter fish, crabs, turtles and "
    "countless other creatures. Reefs need warm, clear, shallow water, and they are sensitive to heat and "
    "pollution.",
    "Cacti survive in dry places by storing water in thick, fleshy stems. Their leaves have become spines, "
    "which lose almost no water and protect the plant from thirsty animals. Many cacti open their pores only "
    "at night, when the air is cooler, so that less moisture escapes.",
    "Every autumn, many birds fly hundreds or thousands of kilometres to warmer places where food is easier to "
    "find. They navigate using the position of the Sun, the patterns of the stars, landmarks such as coastlines "
    "and rivers, and even Earth's magnetic field. In spring they make the long journey back to breed.",
    "Recycling an aluminum can saves most of the energy needed to make a new one from raw ore. The cans are "
    "shredded, cleaned and melted, and the metal is rolled into sheets for new cans. A can thrown into a "
    "recycling bin can be back on a store shelf within a couple of months.",
    "The abacus is one of the oldest calculating tools. Beads slide along rods, and each rod stands for a place "
    "value: ones, tens, hundreds and so on. A skilled user can add, subtract, multiply and divide with "
    "remarkable speed, and in some schools children still learn arithmetic with one.",
    "The first public railways carried coal and goods, and passengers soon followed. Trains made it possible to "
    "travel in hours what had taken days by horse and cart, and they changed where people lived and worked. "
    "Towns grew up around stations, and clocks across whole countries were set to a single standard time so "
    "timetables made sense.",
    "Weaving interlaces two sets of threads at right angles. The warp threads are stretched lengthwise on the "
    "loom, and the weft thread is passed over and under them, row after row. By changing which warp threads "
    "are lifted, a weaver can create plain cloth, twill, or intricate patterns.",
    "Tea leaves all come from the same plant, Camellia sinensis. What makes green, black or oolong tea "
    "different is how the leaves are processed after picking. Green tea is heated quickly to stop the leaves "
    "from oxidizing, while black tea is allowed to oxidize fully, which darkens the leaves and deepens the "
    "flavor.",
    "Roman engineers built aqueducts to bring fresh water into their cities. Most of the channel ran "
    "underground or along the ground, sloping gently so gravity kept the water moving. Where a valley stood in "
    "the way, they raised the channel on tall stone arches, some of which still stand today.",
    "Paper can be made from almost any plant fiber. The fibers are soaked and beaten into a pulp, spread in a "
    "thin layer on a fine screen, and pressed and dried into sheets. Most modern paper comes from wood pulp, "
    "but cotton rags, hemp and even old paper are used as well.",
    "A snowflake begins as a tiny ice crystal forming around a speck of dust in a cold cloud. As it falls, "
    "water vapor freezes onto it, building arms in six directions because of the way water molecules fit "
    "together. Each flake follows its own path through changing temperature and humidity, so each grows a "
    "slightly different pattern.",
    "Lightning is a giant spark of electricity between a cloud and the ground, or between parts of clouds. "
    "The flash heats the air around it to tens of thousands of degrees in an instant, and the air expands so "
    "violently that it makes the sound we call thunder. Since light travels faster than sound, we see the "
    "flash before we hear the rumble.",
    "When you send a message across the internet, it is split into small packets. Each packet travels on its "
    "own, hopping between routers that pass it closer to its destination, and the packets may even take "
    "different routes. At the other end they are put back together in the right order.",
    "Tomatoes grow best in full sun and warm soil. Gardeners usually start the seeds indoors and plant them "
    "outside after the last frost, giving each plant a stake or cage to climb. Regular, deep watering helps "
    "prevent cracked fruit, and pinching off side shoots can direct the plant's energy into larger tomatoes.",
    "Maps always simplify the world. A flat map cannot show the curved surface of Earth without stretching some "
    "areas, so mapmakers choose projections that keep what matters most for their purpose, such as true "
    "directions for navigation or true areas for comparing the sizes of countries.",
    "Cheese starts as milk. A little acid or bacterial culture and the enzyme rennet make the milk proteins "
    "clump into curds, leaving liquid whey behind. The curds are cut, drained, salted and pressed, and many "
    "cheeses are then aged for weeks or years, developing stronger flavors as they ripen.",
]
