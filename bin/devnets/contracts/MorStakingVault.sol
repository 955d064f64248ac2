// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @notice The part of ERC-20 the devnet contracts call.
interface IERC20Transfers {
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
}

/// @title MorStakingVault: a MOR staking stand-in for devnets (SIMULATION only)
/// @notice Takes one token (the devnet's MockUSDC) with `transferFrom` and records what
/// each staker put in. No rewards, no withdrawals: the funding flow only stakes, and the
/// tests judge it by `stakedOf`, `totalStaked` and the `Staked` events. Its owner (the
/// deployer) can pause it, so tests can watch a stake revert with a reason.
contract MorStakingVault {
    /// @notice The staked token.
    IERC20Transfers public immutable token;
    /// @notice The account allowed to pause and unpause (the deployer).
    address public immutable owner;
    /// @notice While true, `stake` reverts with "staking paused".
    bool public paused;
    /// @notice Everything each staker has staked, in token base units.
    mapping(address => uint256) public stakedOf;
    /// @notice Sum of `stakedOf`.
    uint256 public totalStaked;

    /// @notice One successful stake.
    event Staked(address indexed staker, uint256 amount);
    /// @notice The owner paused staking.
    event Paused(address account);
    /// @notice The owner resumed staking.
    event Unpaused(address account);

    constructor(IERC20Transfers stakedToken) {
        token = stakedToken;
        owner = msg.sender;
    }

    /// @notice Pulls `amount` of the token from the caller (who must have approved this
    /// vault) and records it as the caller's stake.
    function stake(uint256 amount) external {
        require(!paused, "staking paused");
        require(amount > 0, "stake amount is zero");
        require(token.transferFrom(msg.sender, address(this), amount), "token transfer failed");
        stakedOf[msg.sender] += amount;
        totalStaked += amount;
        emit Staked(msg.sender, amount);
    }

    /// @notice Stops `stake` until `unpause`. Owner only.
    function pause() external {
        require(msg.sender == owner, "caller is not the owner");
        paused = true;
        emit Paused(msg.sender);
    }

    /// @notice Lets `stake` run again. Owner only.
    function unpause() external {
        require(msg.sender == owner, "caller is not the owner");
        paused = false;
        emit Unpaused(msg.sender);
    }
}
