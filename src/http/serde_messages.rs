//! serde speaks English and names fields in its messages; the council reads French.
//! This turns the common messages into French and finds the field they are about.

/// The field at fault and a French message, from serde's path and message.
pub fn french(path: &str, detail: &str) -> (String, String) {
    // serde_json adds " at line 1 column 12": useless to a person filling a form.
    let detail = match detail.find(" at line ") {
        Some(index) => &detail[..index],
        None => detail,
    };
    let quoted = between_backticks(detail);
    let in_path = |name: &str| {
        if path == "." || path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        }
    };
    if let Some(rest) = detail.strip_prefix("missing field ") {
        let name = quoted.first().cloned().unwrap_or_else(|| rest.to_owned());
        return (in_path(&name), "champ obligatoire manquant".to_owned());
    }
    if detail.starts_with("unknown field ") {
        let name = quoted.first().cloned().unwrap_or_default();
        let accepted = quoted
            .get(1..)
            .map(|names| names.join(", "))
            .unwrap_or_default();
        // serde_path_to_error already put the unknown field at the end of the path.
        let field = if path.ends_with(&name) {
            path.to_owned()
        } else {
            in_path(&name)
        };
        let message = if accepted.is_empty() {
            "champ inconnu : aucun champ n'est accepté ici".to_owned()
        } else {
            format!("champ inconnu ; champs acceptés : {accepted}")
        };
        return (field, message);
    }
    if detail.starts_with("duplicate field ") {
        let name = quoted.first().cloned().unwrap_or_default();
        let field = if path.ends_with(&name) {
            path.to_owned()
        } else {
            in_path(&name)
        };
        return (
            field,
            "champ donné deux fois : une seule valeur est acceptée".to_owned(),
        );
    }
    let field = if path == "." || path.is_empty() {
        "corps".to_owned()
    } else {
        path.to_owned()
    };
    if detail.starts_with("unknown variant ") {
        let value = quoted.first().cloned().unwrap_or_default();
        let accepted = quoted
            .get(1..)
            .map(|names| names.join(", "))
            .unwrap_or_default();
        return (
            field,
            format!("valeur « {value} » inconnue ; valeurs acceptées : {accepted}"),
        );
    }
    if let Some(rest) = detail.strip_prefix("invalid type: ") {
        let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, "?"));
        return (
            field,
            format!("type invalide ({found}) ; attendu : {expected}"),
        );
    }
    if let Some(rest) = detail.strip_prefix("invalid value: ") {
        let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, "?"));
        return (
            field,
            format!("valeur invalide ({found}) ; attendu : {expected}"),
        );
    }
    if detail.starts_with("input contains invalid characters")
        || detail.starts_with("premature end of input")
        || detail.starts_with("trailing input")
    {
        return (field, format!("date ou heure invalide ({detail}) ; formats acceptés : AAAA-MM-JJ pour une date, AAAA-MM-JJThh:mm:ssZ pour un instant"));
    }
    if detail.contains("out of range") || detail.starts_with("no possible date") {
        return (field, format!("date ou nombre hors limites ({detail})"));
    }
    if detail.starts_with("invalid digit")
        || detail.starts_with("cannot parse integer")
        || detail.starts_with("number too large")
    {
        return (field, format!("nombre entier attendu ({detail})"));
    }
    (field, format!("valeur refusée : {detail}"))
}

fn between_backticks(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::french;

    #[test]
    fn names_the_field() {
        assert_eq!(
            french(".", "missing field `name` at line 1 column 2").0,
            "name"
        );
        let (field, message) = french(
            "colour",
            "unknown field `colour`, expected `name` or `address`",
        );
        assert_eq!(field, "colour");
        assert!(message.contains("name, address"), "{message}");
        let (field, message) = french(
            "kind",
            "unknown variant `car`, expected one of `flat`, `parking`",
        );
        assert_eq!(field, "kind");
        assert!(message.contains("flat, parking"));
        assert_eq!(
            french(
                "floor",
                "invalid type: string \"x\", expected i64 at line 1 column 9"
            )
            .1,
            "type invalide (string \"x\") ; attendu : i64"
        );
    }
}
