//! Submits: what a bid takes before its ticket (its agent's live bid, its escrow, a place in the
//! book), then its ticket and its id; refusals remembered under their id; batches that claim
//! their tickets and reserve their room at once.

use std::sync::atomic::Ordering;

use super::ids::{Body, Inserted, State};
use super::{Admission, Admitted, Help, Ledger, Need, Refusal, first_result, reject, rejected_entry};
use crate::auction::error::{RejectCode, Rejection};
use crate::auction::intake::{Claim, Entry, Intake, Remember};
use crate::auction::money::Credits;

/// Book and id-table room a batch part reserved at once, so its producers touch those shared
/// counters once per part, not once per bid. What is left is given back when the part ends.
#[derive(Debug, Default)]
struct Reserved {
    /// Live bids of the book not yet taken by an item.
    book: usize,
    /// Id inserts not yet made.
    ids: usize,
}

/// What booking a bid came to.
enum Booked {
    /// Its answer.
    Answered(Result<Admitted, Rejection>),
    /// The id table is full: the bid comes back, what it took given back.
    Full(Admission),
}

impl Ledger {
    /// Books a checked bid: the per-agent and book limits and the escrow by compare-and-swap,
    /// then its ticket and its id; a repeat gives back what it took and answers with the first
    /// result.
    pub(crate) fn admit(&self, intake: &Intake, a: Admission, help: Help<'_>) -> Result<Admitted, Rejection> {
        let mut a = a;
        loop {
            // Taken before the ticket (see the module documentation).
            let mut reserved = Reserved::default();
            let refusal = self.take(intake, &a, &mut reserved);
            let mut claim = self.claim(intake, 1, help);
            match self.book(intake, &mut claim, a, refusal, &mut reserved) {
                Booked::Answered(answer) => return answer,
                Booked::Full(back) => {
                    drop(claim);
                    help(Need::Rebuild);
                    a = back;
                }
            }
        }
    }

    /// Takes what `a` needs: a live bid of its agent's, its escrow, a live bid of the book's;
    /// or, when one is short, gives back what it took and says why, in the order refusals are
    /// reported.
    fn take(&self, intake: &Intake, a: &Admission, reserved: &mut Reserved) -> Option<Rejection> {
        let account = self.accounts.get(a.bid.account);
        let limit = a.bid.limit.micros();
        if let Err(live) = account.reserve_live(a.max_bids) {
            return Some(reject(
                RejectCode::TooManyBids,
                format!("agent `{}` already holds {live} live bids", a.bid.agent),
            ));
        }
        if let Err(available) = account.debit(limit) {
            account.live.fetch_sub(1, Ordering::AcqRel);
            return Some(reject(
                RejectCode::InsufficientCredits,
                format!("limit {} exceeds available {}", a.bid.limit, Credits::from_micros(available)),
            ));
        }
        if reserved.book > 0 {
            reserved.book -= 1;
        } else if !intake.reserve_live(a.book_size) {
            self.give_back(intake, a, false);
            return Some(reject(RejectCode::BookFull, format!("the book holds {} live bids", a.book_size)));
        }
        None
    }

    /// Gives back what [`take`](Ledger::take) took for a bid not booked after all: its agent's
    /// live bid and its escrow, and the book's live bid when `book` (credits added: after the
    /// ticket, or with none).
    fn give_back(&self, intake: &Intake, a: &Admission, book: bool) {
        let account = self.accounts.get(a.bid.account);
        account.available.fetch_add(a.bid.limit.micros(), Ordering::AcqRel);
        account.live.fetch_sub(1, Ordering::AcqRel);
        if book {
            intake.release_live(1);
        }
    }

    /// Books `a` (which took what it needs unless `refusal`) under the claim's next ticket, or
    /// records its refusal; a repeated id gives back what it took. `Err` hands `a` back, with
    /// what it took given back, when the id table must be rebuilt first.
    fn book(
        &self,
        intake: &Intake,
        claim: &mut Claim<'_>,
        a: Admission,
        refusal: Option<Rejection>,
        reserved: &mut Reserved,
    ) -> Booked {
        let number = a.bid.account;
        let limit = a.bid.limit.micros();
        let ids = self.ids();
        let Some(r) = refusal else {
            let body = Body { account: number, bid: a.bid.id.clone(), limit, refusal: None };
            let state = State::Pending { accepted: claim.ticket() };
            let inserted =
                if reserved.ids > 0 { ids.insert_reserved(body, state) } else { ids.insert(body, state) };
            return match inserted {
                Inserted::New(_) => {
                    reserved.ids = reserved.ids.saturating_sub(1);
                    self.accounts.get(number).escrowed.fetch_add(limit, Ordering::AcqRel);
                    claim.put(Entry::Accepted(a.bid));
                    Booked::Answered(Ok(Admitted::New))
                }
                Inserted::Repeat(first) => {
                    self.give_back(intake, &a, true);
                    Booked::Answered(first_result(first))
                }
                Inserted::Full(_) => {
                    self.give_back(intake, &a, true);
                    Booked::Full(a)
                }
            };
        };
        let cycle = intake.cycle_of(claim.ticket());
        let body =
            Body { account: number, bid: a.bid.id.clone(), limit: 0, refusal: Some(Box::new(r.clone())) };
        match ids.insert(body, State::Refused { cycle }) {
            Inserted::New(_) => {
                let remember = Remember { account: number, bid: a.bid.id.clone(), cycle, refused: true };
                claim.put(rejected_entry(
                    a.bid.id.as_str(),
                    a.bid.agent.as_str(),
                    &r,
                    &a.bid.correlation_id,
                    Some(remember),
                ));
                Booked::Answered(Err(r))
            }
            Inserted::Repeat(first) => Booked::Answered(first_result(first)),
            Inserted::Full(_) => Booked::Full(a),
        }
    }

    /// Records a submit refused by its checks, unless the id was used before (then the first
    /// result answers), and writes its `bid_rejected`.
    pub(crate) fn refuse(&self, intake: &Intake, r: Refusal, help: Help<'_>) -> Result<Admitted, Rejection> {
        let number = self.account_of(&r.agent);
        loop {
            let mut claim = self.claim(intake, 1, help);
            match self.refuse_claimed(intake, &mut claim, number, &r) {
                Some(answer) => return answer,
                None => {
                    drop(claim);
                    help(Need::Rebuild);
                }
            }
        }
    }

    /// As [`refuse`](Ledger::refuse) under the claim's next ticket; `None` when the id table must
    /// be rebuilt first.
    fn refuse_claimed(
        &self,
        intake: &Intake,
        claim: &mut Claim<'_>,
        number: Option<u32>,
        r: &Refusal,
    ) -> Option<Result<Admitted, Rejection>> {
        let Refusal { agent, bid, rejection, correlation_id } = r;
        let remember = match number {
            None => None,
            Some(number) => {
                let cycle = intake.cycle_of(claim.ticket());
                let body = Body {
                    account: number,
                    bid: bid.clone(),
                    limit: 0,
                    refusal: Some(Box::new(rejection.clone())),
                };
                match self.ids().insert(body, State::Refused { cycle }) {
                    Inserted::New(_) => {
                        Some(Remember { account: number, bid: bid.clone(), cycle, refused: true })
                    }
                    Inserted::Repeat(first) => return Some(first_result(first)),
                    Inserted::Full(_) => return None,
                }
            }
        };
        claim.put(rejected_entry(bid.as_str(), agent.as_str(), rejection, correlation_id, remember));
        Some(Err(rejection.clone()))
    }

    /// Admits or refuses a batch, in order: what each item needs is taken first, then the
    /// batch's tickets are claimed at once, so the items keep their order and producers touch
    /// the shared ticket counter once per batch, not once per bid. A batch larger than the
    /// intake ring goes in parts.
    pub(crate) fn batch(
        &self,
        intake: &Intake,
        items: Vec<Result<Admission, Refusal>>,
        help: Help<'_>,
    ) -> Vec<Result<Admitted, Rejection>> {
        let part = (intake.slots() / 2).max(1);
        let mut answers = Vec::with_capacity(items.len());
        let mut items = items.into_iter().peekable();
        let mut taken: Vec<(Result<Admission, Refusal>, Option<Rejection>)> = Vec::new();
        while items.peek().is_some() {
            let part: Vec<Result<Admission, Refusal>> = items.by_ref().take(part).collect();
            let admissions = part.iter().filter(|i| i.is_ok()).count();
            let mut reserved = Reserved::default();
            if let Some(Ok(a)) = part.iter().find(|i| i.is_ok())
                && intake.reserve_live_n(admissions, a.book_size)
            {
                reserved.book = admissions;
            }
            taken.extend(part.into_iter().map(|item| {
                let refusal = match &item {
                    Ok(a) => self.take(intake, a, &mut reserved),
                    Err(_) => None,
                };
                (item, refusal)
            }));
            intake.release_live(std::mem::take(&mut reserved.book));
            // One ticket more than the items: the table cannot be rebuilt under the part until
            // it is written, after the unused reservation is given back.
            let mut claim = self.claim(intake, taken.len() + 1, help);
            let ids = self.ids();
            if ids.reserve(admissions) {
                reserved.ids = admissions;
            }
            let mut rebuilt = false;
            let mut taken = taken.drain(..);
            while let Some((item, refusal)) = taken.next() {
                let answer = match item {
                    Ok(a) => match self.book(intake, &mut claim, a, refusal, &mut reserved) {
                        Booked::Answered(answer) => Ok(answer),
                        Booked::Full(a) => Err(Ok(a)),
                    },
                    Err(r) => {
                        let number = self.account_of(&r.agent);
                        self.refuse_claimed(intake, &mut claim, number, &r).ok_or(Err(r))
                    }
                };
                match answer {
                    Ok(answer) => answers.push(answer),
                    Err(item) => {
                        // The id table is full: what the rest took is given back, and each goes
                        // on its own once the table is rebuilt.
                        let rest: Vec<Result<Admission, Refusal>> = std::iter::once(item)
                            .chain(taken.by_ref().map(|(item, refusal)| {
                                if let (Ok(a), None) = (&item, &refusal) {
                                    self.give_back(intake, a, true);
                                }
                                item
                            }))
                            .collect();
                        ids.unreserve(std::mem::take(&mut reserved.ids));
                        drop(claim);
                        // From here the table `ids` points to may be gone: not used again.
                        rebuilt = true;
                        help(Need::Rebuild);
                        for item in rest {
                            answers.push(match item {
                                Ok(a) => self.admit(intake, a, help),
                                Err(r) => self.refuse(intake, r, help),
                            });
                        }
                        break;
                    }
                }
            }
            if !rebuilt {
                ids.unreserve(reserved.ids);
            }
        }
        answers
    }
}
