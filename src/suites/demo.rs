//! `demo`: a small shop checkout with every kind of outcome, for demos and
//! tests. 36 walks: 20 pass, 8 are cancelled (guests cannot fill a cart),
//! 6 are pruned (a voucher on an empty cart makes no sense), and 2 fail: a
//! planted bug applies the discount twice when Bob pays by voucher under
//! discount pricing. The serial action switches the shop's pricing once per
//! branch and hands the discount to every walk.

use crate::model::action::{Action, ActionResult, Halt, SerialAction, cancel};
use crate::model::walk::WalkView;
use crate::order::{Entries, WalkOrder};
use crate::suites::{Fixture, Suite};
use serde::{Deserialize, Serialize};

/// One shopper's session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Who logged in.
    pub user: Option<Login>,
    /// Items in the cart.
    pub items: u32,
    /// Discount in percent, handed over by the pricing serial action.
    pub discount: u32,
    /// Amount charged at checkout, in cents.
    pub charged: Option<u64>,
}

/// Who logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Login {
    /// A regular account.
    Alice,
    /// A legacy account.
    Bob,
    /// Not logged in.
    Guest,
}

impl Action<Session> for Login {
    fn options() -> Vec<Self> {
        vec![Login::Alice, Login::Bob, Login::Guest]
    }
    fn run(&self, session: &mut Session) -> ActionResult {
        session.user = Some(*self);
        Ok(())
    }
}

/// Put items in the cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddItems(pub u32);

impl Action<Session> for AddItems {
    fn options() -> Vec<Self> {
        vec![AddItems(0), AddItems(1), AddItems(5)]
    }
    fn run(&self, session: &mut Session) -> ActionResult {
        if self.0 > 0 && session.user == Some(Login::Guest) {
            // The shop hides the cart from guests: nothing to test here.
            return cancel();
        }
        session.items += self.0;
        Ok(())
    }
}

/// Switch the whole shop's pricing: a global change, once per branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pricing {
    /// List prices.
    Standard,
    /// 10% off everything.
    Discount,
}

impl SerialAction<Session> for Pricing {
    type Value = u32;
    fn options() -> Vec<Self> {
        vec![Pricing::Standard, Pricing::Discount]
    }
    fn run(&self) -> Result<u32, Halt> {
        Ok(match self {
            Pricing::Standard => 0,
            Pricing::Discount => 10,
        })
    }
    fn apply(&self, discount: &u32, session: &mut Session) -> ActionResult {
        session.discount = *discount;
        Ok(())
    }
}

/// Pay for the cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Checkout {
    /// Pay by card.
    Card,
    /// Pay with a voucher worth 5.00.
    Voucher,
}

/// Price of one item, in cents.
const PRICE: u64 = 1_000;
/// Value of a voucher, in cents.
const VOUCHER: u64 = 500;

impl Checkout {
    /// The shop under test, with a planted bug for legacy accounts.
    fn shop_charge(self, session: &Session) -> u64 {
        let gross = u64::from(session.items) * PRICE;
        let mut net = gross * u64::from(100 - session.discount) / 100;
        if self == Checkout::Voucher {
            net = net.saturating_sub(VOUCHER);
            if session.user == Some(Login::Bob) && session.discount > 0 {
                // The bug: legacy accounts get the discount twice.
                net = net * u64::from(100 - session.discount) / 100;
            }
        }
        net
    }

    /// What the shop should charge.
    fn expected_charge(self, session: &Session) -> u64 {
        let gross = u64::from(session.items) * PRICE;
        let net = gross * u64::from(100 - session.discount) / 100;
        match self {
            Checkout::Card => net,
            Checkout::Voucher => net.saturating_sub(VOUCHER),
        }
    }
}

impl Action<Session> for Checkout {
    fn options() -> Vec<Self> {
        vec![Checkout::Card, Checkout::Voucher]
    }
    fn run(&self, session: &mut Session) -> ActionResult {
        let charged = self.shop_charge(session);
        session.charged = Some(charged);
        let expected = self.expected_charge(session);
        if charged != expected {
            return Err(Halt::fail(format!(
                "charged {charged} cents for {} items at {}% off, expected {expected}",
                session.items, session.discount
            )));
        }
        Ok(())
    }
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        *self == Checkout::Voucher && walk.get::<AddItems>().is_some_and(|a| a.0 == 0)
    }
}

/// The demo walk order: `Login, AddItems, *Pricing, Checkout`.
pub fn order() -> WalkOrder<Session, impl Entries<Session>> {
    WalkOrder::new().then::<Login>().then::<AddItems>().serial::<Pricing>().then::<Checkout>()
}

/// The `demo` suite.
pub fn suite() -> Box<dyn Suite> {
    crate::suites::suite(
        "demo",
        "a shop checkout: cancel, prune, a serial pricing change, 2 planted failures",
        order(),
        || Ok(Fixture::new(Session::default())),
    )
}
