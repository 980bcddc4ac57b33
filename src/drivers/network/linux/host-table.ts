// The host's nftables table (NAT, forwards, filters of every linux network), loaded as a delta where this process
// knows what it loaded last, else swapped in whole.
import type { Nft } from '../../../exec/nft.js';
import { log } from '../../../shared/log.js';
import type { NetworkConfig } from '../../../shared/model.js';
import {
  type RulesetModel,
  renderRuleset,
  rulesetDelta,
  rulesetModel,
  TABLE_FAMILY,
  TABLE_NAME,
} from './ruleset.js';

/** The host table as this process last loaded it. */
export class HostTable {
  // Whether this process knows the host table is absent (it deleted it, or found none needed).
  private tableAbsent = false;
  // What this process last loaded into the host table (deltas are computed against it); undefined: unknown.
  private loaded: RulesetModel | undefined;

  constructor(private readonly nft: Nft) {}

  /**
   * Brings the host table in line with every persisted network in one `nft -f` transaction. Where this process
   * loaded the table before, only the networks that changed are touched (`rulesetDelta`: the counters of the others
   * keep counting); otherwise, or when the delta does not apply (the table was changed behind its back), the whole
   * table is swapped in. No network at all: the table is deleted (once: a table this process knows it deleted is not
   * deleted again).
   */
  async apply(configs: readonly NetworkConfig[]): Promise<void> {
    const model = rulesetModel(configs);
    if (!model) {
      if (!this.tableAbsent) await this.nft.deleteTable(TABLE_FAMILY, TABLE_NAME);
      this.tableAbsent = true;
      this.loaded = undefined;
      return;
    }
    this.tableAbsent = false;
    if (this.loaded) {
      const delta = rulesetDelta(this.loaded, model);
      try {
        if (delta) await this.nft.load(delta);
        this.loaded = model;
        return;
      } catch (e) {
        log.warn({ err: (e as Error).message }, 'nftables delta did not apply; loading the whole table');
      }
    }
    this.loaded = undefined;
    await this.nft.replaceTable(TABLE_FAMILY, TABLE_NAME, renderRuleset(model));
    this.loaded = model;
  }
}
