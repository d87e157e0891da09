//! The identities a client certificate carries, as every listener's
//! allowlist names them: each `uri:` and `dns:` subject alternative name of
//! the certificate (a SPIFFE ID is a URI). The signer, the witness and the
//! gateway all match their `allowed_identities` against this list, so one
//! spelling works everywhere.

/// The `uri:<URI>` and `dns:<name>` identities in a DER certificate's subject
/// alternative names; none if it does not parse (the TLS handshake's verifier
/// parsed and checked it already) or has no such names.
pub fn certificate_identities(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(format!("uri:{uri}")),
            GeneralName::DNSName(dns) => Some(format!("dns:{dns}")),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::certificate_identities;

    #[test]
    fn garbage_has_no_identity() {
        assert!(certificate_identities(b"not a certificate").is_empty());
        assert!(certificate_identities(&[]).is_empty());
    }
}
