/*!
Keychain backend: generic passwords keyed by service and account, the items
llxprt-code writes on macOS. Not built on the project's Linux CI; kept small
so it can be checked by reading.

Items llxprt-code created carry that program's access list, so the first
read from this daemon may make macOS ask the user to allow it. That prompt
comes from the OS, outside any request we can bound; the call timeout in
`KeyringAccess` still bounds how long a request waits for it.
*/
#![forbid(unsafe_code)]

use security_framework::base::Error as SfError;
use security_framework::item::{ItemClass, ItemSearchOptions, Limit};
use security_framework::passwords::{delete_generic_password, get_generic_password, set_generic_password};

use super::{Keyring, PROBE_ACCOUNT_PREFIX};
use crate::secret::SecretString;
use crate::store::error::{StoreError, StoreErrorKind, StoreResult};

const ERR_SEC_ITEM_NOT_FOUND: i32 = -25300;
const ERR_SEC_USER_CANCELED: i32 = -128;
const ERR_SEC_AUTH_FAILED: i32 = -25293;
const ERR_SEC_INTERACTION_NOT_ALLOWED: i32 = -25308;

/// The login keychain.
pub struct Keychain;

fn classify(e: &SfError) -> StoreError {
    let kind = match e.code() {
        ERR_SEC_USER_CANCELED | ERR_SEC_AUTH_FAILED => StoreErrorKind::Denied,
        ERR_SEC_INTERACTION_NOT_ALLOWED => StoreErrorKind::Locked,
        ERR_SEC_ITEM_NOT_FOUND => StoreErrorKind::NotFound,
        _ => StoreErrorKind::Unavailable,
    };
    StoreError::new(kind, format!("Keychain error {}", e.code()))
}

impl Keyring for Keychain {
    fn describe(&self) -> String {
        "macOS Keychain".to_owned()
    }

    fn check(&self) -> StoreResult<()> {
        match get_generic_password("llxprt-code-machine-secret", PROBE_ACCOUNT_PREFIX) {
            Ok(_) => Ok(()),
            Err(e) if e.code() == ERR_SEC_ITEM_NOT_FOUND => Ok(()),
            Err(e) => Err(classify(&e)),
        }
    }

    fn get(&self, service: &str, account: &str) -> StoreResult<Option<SecretString>> {
        match get_generic_password(service, account) {
            Ok(bytes) => String::from_utf8(bytes)
                .map(|s| Some(SecretString::new(s)))
                .map_err(|_| StoreError::new(StoreErrorKind::Corrupt, "keychain item is not UTF-8")),
            Err(e) if e.code() == ERR_SEC_ITEM_NOT_FOUND => Ok(None),
            Err(e) => Err(classify(&e)),
        }
    }

    fn set(&self, service: &str, account: &str, value: &SecretString) -> StoreResult<()> {
        set_generic_password(service, account, value.expose().as_bytes()).map_err(|e| classify(&e))
    }

    fn delete(&self, service: &str, account: &str) -> StoreResult<bool> {
        match delete_generic_password(service, account) {
            Ok(()) => Ok(true),
            Err(e) if e.code() == ERR_SEC_ITEM_NOT_FOUND => Ok(false),
            Err(e) => Err(classify(&e)),
        }
    }

    fn list(&self, service: &str) -> StoreResult<Vec<String>> {
        let results = match ItemSearchOptions::new()
            .class(ItemClass::generic_password())
            .service(service)
            .load_attributes(true)
            .limit(Limit::All)
            .search()
        {
            Ok(results) => results,
            Err(e) if e.code() == ERR_SEC_ITEM_NOT_FOUND => return Ok(Vec::new()),
            Err(e) => return Err(classify(&e)),
        };
        Ok(results
            .iter()
            .filter_map(|r| r.simplify_dict())
            .filter_map(|mut d| d.remove("acct"))
            .filter(|a| !a.starts_with(PROBE_ACCOUNT_PREFIX))
            .collect())
    }
}
