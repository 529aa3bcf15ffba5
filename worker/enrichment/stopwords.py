"""Arabic stop words in the match form: stopwords-iso's Arabic list plus news-reporting words.

stopwords-iso (MIT) ships 480 Arabic function words. A news story also repeats reporting verbs,
titles and calendar words ("قال", "وأضاف", "الدكتور", "أمس") that say nothing about its subject;
they are listed here because no packaged list covers newswire Arabic.
"""

from __future__ import annotations

from functools import lru_cache

import stopwordsiso

from worker.stages.normalize import match_form

NEWS_STOPWORDS = (
    "قال", "قالت", "يقول", "تقول", "أضاف", "أضافت", "يضيف", "أكد", "أكدت", "يؤكد", "أوضح", "أوضحت",
    "أشار", "أشارت", "يشير", "ذكر", "ذكرت", "أعلن", "أعلنت", "يعلن", "أفاد", "أفادت", "لفت", "بين",
    "تابع", "تابعت", "مضيفا", "مشيرا", "مؤكدا", "موضحا", "لافتا", "مبينا", "وفقا", "بحسب", "حسب",
    "وفق", "خلال", "أمس", "اليوم", "غدا", "الماضي", "المقبل", "الجاري", "الحالي", "القادم",
    "الدكتور", "المهندس", "الأستاذ", "الشيخ", "السيد", "معالي", "سمو", "صاحب", "فضيلة",
    "العام", "عام", "الأول", "الثاني", "الثالث", "الأولى", "الثانية", "أكثر", "أقل", "نحو",
    "حوالي", "كذلك", "أيضا", "إضافة", "بالإضافة", "ضمن", "لدى", "عبر", "حيث", "كما", "التي",
    "الذي", "الذين", "وذلك", "ذلك", "هذه", "هذا", "تلك", "إنه", "أنه", "إنها", "أنها", "فيما",
    "بعد", "قبل", "عدد", "عدة", "جميع", "كافة", "بشكل", "مختلف", "مختلفة", "بن", "بنت", "أبو",
    "عبد", "جانب", "إطار", "مجال", "شأن", "بشأن", "يتم", "تم", "يكون", "تكون", "كان", "كانت",
    "يوم", "الأحد", "الاثنين", "الإثنين", "الثلاثاء", "الأربعاء", "الخميس", "الجمعة", "السبت",
    "صباح", "مساء", "الساعة", "دقيقة", "شهر", "سنة", "سنوات", "أيام", "الأسبوع", "مليون",
    "مليار", "ألف", "آلاف", "المائة", "المئة", "بالمئة", "بالمائة", "نسبة", "بنسبة", "رابط",
    "الخبر", "بصحيفة", "صحيفة", "سمات", "وكالة", "الأنباء", "للأنباء", "مصدر", "مصادر",
)


@lru_cache(maxsize=1)
def stopword_forms() -> frozenset[str]:
    """Every stop word in the match form, with and without the conjunction و."""
    words = {match_form(w).strip() for w in stopwordsiso.stopwords("ar")}
    words |= {match_form(w).strip() for w in NEWS_STOPWORDS}
    words.discard("")
    return frozenset(words | {"و" + w for w in words})
