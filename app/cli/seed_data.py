"""The demo catalog: realistic digital goods a small Canadian shop might sell. Prices in CAD cents."""

from __future__ import annotations

from typing import TypedDict


class CategorySeed(TypedDict):
    slug: str
    name: str
    description: str
    colour: str


class ProductSeed(TypedDict, total=False):
    slug: str
    name: str
    category: str
    price: int
    summary: str
    description: str
    featured: bool
    stock: int | None


CATEGORIES: list[CategorySeed] = [
    {
        "slug": "ebooks",
        "name": "E-books",
        "colour": "#2f6f73",
        "description": "Practical guides you can read in an evening and use for years.",
    },
    {
        "slug": "courses",
        "name": "Video courses",
        "colour": "#7a3e9d",
        "description": "Self-paced lessons with exercises, downloads and lifetime updates.",
    },
    {
        "slug": "templates",
        "name": "Templates",
        "colour": "#c0572a",
        "description": "Spreadsheets, documents and design files that save you hours.",
    },
    {
        "slug": "fonts",
        "name": "Fonts",
        "colour": "#34495e",
        "description": "Typefaces licensed for desktop, web and small business use.",
    },
    {
        "slug": "audio",
        "name": "Music & audio",
        "colour": "#1f7a3a",
        "description": "Royalty-free tracks, loops and sound effects for your projects.",
    },
]

_P = ProductSeed

PRODUCTS: list[ProductSeed] = [
    _P(
        slug="small-shop-bookkeeping",
        name="Bookkeeping for Small Shops",
        category="ebooks",
        price=2400,
        featured=True,
        summary="Keep clean books in two hours a month, GST/HST included.",
        description="A plain-language guide to bookkeeping for Canadian sole proprietors and small "
        "corporations. Covers chart of accounts, receipts, GST/HST filing periods, and year-end with your "
        "accountant. Includes a worked example of a year of a craft business. 184 pages, PDF and EPUB.",
    ),
    _P(
        slug="pricing-digital-products",
        name="Pricing Digital Products",
        category="ebooks",
        price=1900,
        summary="Charge what your work is worth, with numbers to back it up.",
        description="How to price e-books, courses and software: anchoring, tiers, launch discounts and "
        "when to raise prices. With spreadsheets for testing your own numbers. 132 pages, PDF and EPUB.",
    ),
    _P(
        slug="field-guide-sourdough",
        name="A Field Guide to Sourdough",
        category="ebooks",
        price=1500,
        summary="From starter to crumb shot, without the mystique.",
        description="A baker's notebook of 40 tested recipes, a troubleshooting chart for every common "
        "problem, and a schedule that fits a working week. 220 pages with photographs, PDF.",
    ),
    _P(
        slug="remote-team-handbook",
        name="The Remote Team Handbook",
        category="ebooks",
        price=2900,
        featured=True,
        summary="Rituals, tools and writing habits of calm distributed teams.",
        description="Lessons from twelve remote companies on hiring, onboarding, meetings that matter and "
        "asynchronous decisions. Includes a template handbook you can adapt. 240 pages, PDF and EPUB.",
    ),
    _P(
        slug="canadian-freelancer-taxes",
        name="Taxes for Canadian Freelancers",
        category="ebooks",
        price=2200,
        summary="Instalments, deductions and the home office, explained.",
        description="Everything a self-employed Canadian needs for filing season: T2125, CPP contributions, "
        "instalment reminders, the home-office deduction and what to keep for six years. Updated yearly.",
    ),
    _P(
        slug="writing-docs-people-read",
        name="Writing Docs People Read",
        category="ebooks",
        price=1700,
        summary="Technical writing for engineers who would rather be coding.",
        description="Short chapters on READMEs, runbooks, design docs and release notes, each with a "
        "before-and-after example. 150 pages, PDF and EPUB.",
    ),
    _P(
        slug="intro-watercolour",
        name="Watercolour Foundations",
        category="courses",
        price=7900,
        featured=True,
        summary="Twelve video lessons from first wash to finished landscape.",
        description="Five hours of video across twelve lessons: materials, washes, wet-in-wet, colour "
        "mixing, composition and three complete paintings. Printable reference sheets included.",
    ),
    _P(
        slug="python-for-analysts",
        name="Python for Analysts",
        category="courses",
        price=12900,
        featured=True,
        summary="From spreadsheets to notebooks in six weeks.",
        description="A project-based course for people who live in Excel: pandas, charts, cleaning messy "
        "data and automating weekly reports. 38 lessons, exercises and solutions.",
    ),
    _P(
        slug="home-studio-recording",
        name="Home Studio Recording",
        category="courses",
        price=9900,
        summary="Record, edit and mix a song in your spare room.",
        description="Microphone placement, gain staging, editing and a mixing workflow, recorded in a real "
        "home studio. 24 lessons with multitrack sessions to practise on.",
    ),
    _P(
        slug="photo-editing-essentials",
        name="Photo Editing Essentials",
        category="courses",
        price=5900,
        summary="A repeatable editing workflow for natural-looking photos.",
        description="Sixteen lessons on exposure, colour, local adjustments and export settings, with raw "
        "files to follow along. Works with any modern editor.",
    ),
    _P(
        slug="public-speaking-bootcamp",
        name="Public Speaking Bootcamp",
        category="courses",
        price=8900,
        summary="Structure, delivery and nerves, in ten short sessions.",
        description="Short daily exercises that take you from a rough idea to a confident ten-minute talk. "
        "Includes talk templates and a feedback checklist.",
    ),
    _P(
        slug="bread-masterclass-live",
        name="Bread Masterclass (limited cohort)",
        category="courses",
        price=14900,
        stock=12,
        summary="A small live cohort: twelve seats, recorded for later.",
        description="Four live sessions with a professional baker, limited to twelve participants so every "
        "question gets answered. Recordings and the recipe pack are yours to keep.",
    ),
    _P(
        slug="freelance-invoice-kit",
        name="Freelance Invoice Kit",
        category="templates",
        price=1200,
        featured=True,
        summary="Invoices, quotes and receipts with GST/HST lines done right.",
        description="Twelve document templates (invoice, quote, receipt, credit note) for Word, Google "
        "Docs and Pages, with tax lines for every province. Editable and brandable.",
    ),
    _P(
        slug="budget-planner-sheet",
        name="Household Budget Planner",
        category="templates",
        price=900,
        summary="A yearly budget spreadsheet that fills in your charts for you.",
        description="Monthly budgets, savings goals, debt payoff and a dashboard of charts. Works in Excel, "
        "Numbers and Google Sheets.",
    ),
    _P(
        slug="content-calendar-2027",
        name="Content Calendar 2027",
        category="templates",
        price=1400,
        summary="Plan a year of posts, newsletters and launches.",
        description="A planning workbook with Canadian holidays, campaign templates and a weekly review "
        "page. Spreadsheet and printable PDF.",
    ),
    _P(
        slug="wedding-stationery-suite",
        name="Wedding Stationery Suite",
        category="templates",
        price=3500,
        summary="Invitations, menus and place cards in matching styles.",
        description="Twenty coordinated designs for print or email, editable in Canva and Affinity. "
        "Includes three colour palettes and font pairings.",
    ),
    _P(
        slug="startup-pitch-deck",
        name="Startup Pitch Deck",
        category="templates",
        price=4900,
        summary="A 20-slide investor deck with notes on what to put on each slide.",
        description="Keynote, PowerPoint and Google Slides versions with speaker notes drawn from fifty "
        "successful seed-round decks.",
    ),
    _P(
        slug="recipe-card-templates",
        name="Recipe Card Templates",
        category="templates",
        price=700,
        summary="Printable 4x6 and 5x7 recipe cards in six styles.",
        description="Fillable PDF and editable versions, designed to print cleanly at home.",
    ),
    _P(
        slug="maple-serif",
        name="Maple Serif",
        category="fonts",
        price=3900,
        featured=True,
        summary="A warm text serif with a full set of weights and italics.",
        description="Eight weights with italics, small caps, old-style figures and support for French and "
        "Indigenous Canadian languages. Desktop and web licence for one business.",
    ),
    _P(
        slug="harbour-grotesk",
        name="Harbour Grotesk",
        category="fonts",
        price=4500,
        summary="A clean grotesque for interfaces and signage.",
        description="Six weights, tabular figures and a variable version. Desktop and web licence.",
    ),
    _P(
        slug="prairie-script",
        name="Prairie Script",
        category="fonts",
        price=2500,
        summary="A relaxed handwritten script for packaging and invitations.",
        description="Connecting script with alternates and ligatures; OTF and WOFF2 files.",
    ),
    _P(
        slug="northern-mono",
        name="Northern Mono",
        category="fonts",
        price=2900,
        summary="A monospaced font for code and tables.",
        description="Four weights with programming ligatures (optional) and box-drawing characters.",
    ),
    _P(
        slug="display-pack-vol-1",
        name="Display Pack Vol. 1 (first edition)",
        category="fonts",
        price=5900,
        stock=25,
        summary="Six display typefaces, numbered first edition of 25.",
        description="A numbered first-edition bundle of six display faces with a printed specimen PDF.",
    ),
    _P(
        slug="lofi-study-beats",
        name="Lo-fi Study Beats",
        category="audio",
        price=1900,
        featured=True,
        summary="Twenty royalty-free lo-fi tracks for videos and streams.",
        description="Twenty tracks in WAV and MP3 with loopable versions, licensed for monetised video.",
    ),
    _P(
        slug="cinematic-ambience",
        name="Cinematic Ambience",
        category="audio",
        price=2900,
        summary="Atmospheres and drones for film and games.",
        description="Forty ambient beds from one to five minutes, 24-bit WAV, royalty-free.",
    ),
    _P(
        slug="podcast-intro-kit",
        name="Podcast Intro Kit",
        category="audio",
        price=1500,
        summary="Intros, stingers and transitions in five styles.",
        description="Fifty short cues with matching beds, cut to common lengths for podcast episodes.",
    ),
    _P(
        slug="nature-sound-effects",
        name="Canadian Nature Sound Effects",
        category="audio",
        price=2400,
        summary="Loons, rivers and forest recorded across Canada.",
        description="Three hundred field recordings from six provinces, tagged and normalised.",
    ),
    _P(
        slug="ukulele-loops",
        name="Ukulele Loops",
        category="audio",
        price=1200,
        summary="Cheerful loops for ads, vlogs and explainers.",
        description="Sixty loops in four keys at three tempos, WAV and Apple Loops formats.",
    ),
    _P(
        slug="meditation-soundscapes",
        name="Meditation Soundscapes",
        category="audio",
        price=1700,
        summary="Ten long-form soundscapes for calm and focus.",
        description="Ten 20-minute pieces for meditation apps and classes, with a commercial licence.",
    ),
    _P(
        slug="retro-game-sfx",
        name="Retro Game SFX",
        category="audio",
        price=900,
        summary="Chiptune sound effects for your next game jam.",
        description="Two hundred 8-bit effects: jumps, coins, power-ups and menus. WAV and OGG.",
    ),
]

DEMO_USERS = [
    {"email": "admin@cartwright.test", "password": "admin-demo-password", "name": "Ada Admin", "role": "admin"},
    {"email": "support@cartwright.test", "password": "support-demo-password", "name": "Sam Support", "role": "support"},
    {
        "email": "customer@cartwright.test",
        "password": "customer-demo-password",
        "name": "Casey Customer",
        "role": "customer",
    },
]


# --- memberships: a coworking space that also sells digital goods (CitizenSpace) ----------------------------------


class CreditTypeSeed(TypedDict):
    code: str
    name: str
    unit: str


class PlanSeed(TypedDict):
    slug: str
    name: str
    description: str
    features: list[str]
    prices: dict[str, dict[str, int]]  # tier -> interval -> amount in CAD cents
    trial_days: int
    allow_cancel_now: bool  # members may end it at once (no refund) rather than only at period end
    credits: dict[str, int]  # credit type code -> amount per billing cycle
    downloads: list[str]  # product slugs any live subscriber may download


CREDIT_TYPES: list[CreditTypeSeed] = [
    {"code": "room-hours", "name": "Meeting-room hours", "unit": "hours"},
    {"code": "day-passes", "name": "Day passes", "unit": "passes"},
]

PLANS: list[PlanSeed] = [
    {
        "slug": "community",
        "name": "Community",
        "description": "Drop in a couple of days a month and join the member community.",
        "features": [
            "Community events and the members' chat",
            "Member discount on workshops",
            "The Remote Team Handbook, free to download",
        ],
        "prices": {"standard": {"month": 1900, "year": 19000}, "member": {"month": 1500, "year": 15000}},
        "trial_days": 0,
        "allow_cancel_now": True,
        "credits": {"day-passes": 2},
        "downloads": ["remote-team-handbook"],
    },
    {
        "slug": "resident",
        "name": "Resident",
        "description": "A regular desk, meeting rooms when you need them, and the freelancer's toolkit.",
        "features": [
            "Everything in Community",
            "Mail handling and a locker",
            "Meeting rooms bookable two weeks ahead",
            "Three templates and guides, free to download",
        ],
        "prices": {"standard": {"month": 4900, "year": 49000}, "member": {"month": 3900, "year": 39000}},
        "trial_days": 14,
        "allow_cancel_now": False,
        "credits": {"room-hours": 10, "day-passes": 4},
        "downloads": ["remote-team-handbook", "freelance-invoice-kit", "content-calendar-2027"],
    },
    {
        "slug": "studio",
        "name": "Studio",
        "description": "For small teams: plenty of room time, day passes for guests, and the full digital library.",
        "features": [
            "Everything in Resident",
            "Guest day passes for your team",
            "Podcast booth included in room hours",
            "Five templates, guides and kits, free to download",
        ],
        "prices": {"standard": {"month": 9900, "year": 99000}},
        "trial_days": 0,
        "allow_cancel_now": False,
        "credits": {"room-hours": 20, "day-passes": 10},
        "downloads": [
            "remote-team-handbook",
            "freelance-invoice-kit",
            "content-calendar-2027",
            "startup-pitch-deck",
            "podcast-intro-kit",
        ],
    },
]


# --- bookable resources: booked by members with credits ---------------------------------------------------------


class ResourceSeed(TypedDict):
    slug: str
    name: str
    description: str
    kind: str  # "room" | "desk"
    credit_type: str  # credit type code
    credit_cost: int  # credits per slot
    price: int  # CAD cents per slot, by card
    capacity: int  # seats per slot
    cancel_cutoff_hours: int
    opens: int  # local hour (SHOP_TIME_ZONE), Monday to Friday
    closes: int
    slot_minutes: int


RESOURCES: list[ResourceSeed] = [
    {
        "slug": "meeting-room-a",
        "name": "Meeting room A",
        "kind": "room",
        "description": "Six seats, a screen and a whiteboard. Booked by the hour.",
        "credit_type": "room-hours",
        "credit_cost": 1,
        "price": 2500,
        "capacity": 1,
        "cancel_cutoff_hours": 2,
        "opens": 9,
        "closes": 17,
        "slot_minutes": 60,
    },
    {
        "slug": "hot-desk-day-pass",
        "name": "Hot desk day pass",
        "kind": "desk",
        "description": "Any free desk in the open space for the day, coffee included.",
        "credit_type": "day-passes",
        "credit_cost": 1,
        "price": 3000,
        "capacity": 8,
        "cancel_cutoff_hours": 24,
        "opens": 9,
        "closes": 17,
        "slot_minutes": 8 * 60,
    },
]
SLOT_DAYS_AHEAD = 14
