//! String literals survive the round trip: printed by the SDK, parsed back by an independent GraphQL parser.

use apollo_parser::Parser;
use apollo_parser::cst::{self, CstNode};
use proptest::prelude::*;

/// Prints `s` as an argument and parses the document back, returning the string value the parser sees.
fn round_trip(s: &str) -> Result<String, String> {
    let mut lit = String::new();
    dagger::querybuilder::write_string(s, &mut lit);
    let doc = format!("query{{f(a:{lit}){{id}}}}");
    let tree = Parser::new(&doc).parse();
    if let Some(err) = tree.errors().next() {
        return Err(format!("{doc}: {err:?}"));
    }
    let def = tree.document().definitions().next().ok_or("no definition")?;
    let cst::Definition::OperationDefinition(op) = def else {
        return Err("not an operation".into());
    };
    let sel = op
        .selection_set()
        .and_then(|s| s.selections().next())
        .ok_or("no selection")?;
    let cst::Selection::Field(field) = sel else {
        return Err("not a field".into());
    };
    let arg = field
        .arguments()
        .and_then(|a| a.arguments().next())
        .ok_or("no argument")?;
    match arg.value() {
        Some(cst::Value::StringValue(v)) => Ok(String::from(&v)),
        other => Err(format!("not a string: {:?}", other.map(|v| v.syntax().to_string()))),
    }
}

#[test]
fn known_hard_strings() {
    for s in [
        "",
        "\"",
        "\\",
        "\\\"",
        "\"\"\"",
        "a\nb\r\nc\td",
        "\u{0}\u{1}\u{1f}\u{7f}",
        "\u{8}\u{c}",
        "é 日本 🚀 \u{2028} \u{feff}",
        "${HOME} $(id) `x`",
    ] {
        assert_eq!(round_trip(s).as_deref(), Ok(s), "{s:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_string_round_trips(s in any::<String>()) {
        prop_assert_eq!(round_trip(&s), Ok(s));
    }

    #[test]
    fn control_heavy_strings_round_trip(s in "[\\x00-\\x1f\\x7f\"\\\\a-z\u{80}-\u{10ffff}]{0,40}") {
        prop_assert_eq!(round_trip(&s), Ok(s));
    }
}
