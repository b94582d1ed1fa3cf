//! The key that signs erasure receipts ([`KeyFamily::Receipt`] of
//! [`SigningKeys`], which holds, seals, rotates and audits it), and the
//! signing.

use super::signing_keys::SigningKeys;
use crate::error::{ControlPlaneError, Result};
use crate::store::{KeyFamily, Store};
use memtrace_common::envelope::Keyring;
use memtrace_common::receipt::{Receipt, SignedReceipt};
use std::sync::Arc;

pub use super::signing_keys::RECEIPT_KEY_PURPOSE;

/// Signs erasure receipts with the control plane's newest receipt key.
/// Cheap to clone; obtain it from [`super::ControlPlane::receipt_signer`].
/// Derefs to its [`SigningKeys`] (listing, rotation, rewrapping).
#[derive(Clone, Debug)]
pub struct ReceiptSigner(SigningKeys);

impl std::ops::Deref for ReceiptSigner {
    type Target = SigningKeys;
    fn deref(&self) -> &SigningKeys {
        &self.0
    }
}

impl ReceiptSigner {
    pub fn new(store: Arc<dyn Store>, keyring: Arc<Keyring>) -> Self {
        Self(SigningKeys::new(store, keyring, KeyFamily::Receipt))
    }

    /// The receipt keys (listing, rotation, rewrapping).
    pub fn keys(&self) -> SigningKeys {
        self.0.clone()
    }

    /// Signs `receipt` with the newest key, creating the first key when
    /// there is none. Sets `issued_at` to now.
    pub async fn sign(&self, mut receipt: Receipt) -> Result<SignedReceipt> {
        let key = self.current_key().await?;
        receipt.issued_at = jiff::Timestamp::now();
        key.sign(receipt)
            .map_err(|e| ControlPlaneError::invalid("receipt", e.to_string()))
    }
}

#[cfg(test)]
mod tests;
